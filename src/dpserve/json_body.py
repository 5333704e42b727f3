"""JSON request bodies (gateway and replicas): parsed only with a bounded structure, large ones in turn.

orjson builds every value as a Python object while holding the GIL, so a parse stalls the event
loop (a worker thread does not help) for as long as it runs, and its time and memory grow with the
number of values, not bytes: an 8 MiB body of `{},{},...` (2.8 M dicts) took ~0.2-0.5 s and
~200 MiB; one of `[],[],...` 0.75 s. A body of LARGE_BODY_BYTES or more is therefore refused
(400, code `json_too_complex`) when it holds more `{`/`[`, `"` or `,` bytes than the limits below;
these bytes are counted anywhere in the body, inside strings too (bytes.count: ~1 ms per 8 MiB).
Within the limits the most expensive 16 MiB body measured parses in ~40-65 ms on the 2-core dev VM
under load (docs/benchmarks.md, "Hostile JSON bodies"). A smaller body cannot hold enough values to
take more than a few ms, and is neither counted nor queued: the hot path of a 2 KB request pays
one length comparison.

Parses of large bodies in one process take turns (`JsonTurns`), each after a pass of the event loop,
so /health and streams get the loop between two of them however many arrive at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from dpserve.errors import HTTPError

T = TypeVar("T")

# Bodies at least this large are counted and parsed in turn. Below it, the worst body (`[],[],...`:
# ~22 k lists) parses in ~6 ms.
LARGE_BODY_BYTES = 64 * 1024
# Objects + arrays: each costs ~70-270 ns and 56-72 bytes (lists are the dearest). 65,536 is far
# above what a chat needs (a message is one object, content parts a few more).
MAX_JSON_CONTAINERS = 65_536
# Two per string or key: unique keys are the dearest scalar (hashing, dict growth; 512 k keys in one
# object: 126 ms).
MAX_JSON_QUOTES = 131_072
# Every array element or object member but the first follows a comma, so this bounds the scalars
# (numbers, null) that neither count above catches: a token-id prompt of up to 262,144 tokens.
MAX_JSON_COMMAS = 262_144

_BOUNDS = (((b"{", b"["), "'{' and '['", MAX_JSON_CONTAINERS), ((b'"',), "'\"'", MAX_JSON_QUOTES),
           ((b",",), "','", MAX_JSON_COMMAS))


def check_json_structure(raw: bytes) -> None:
    """400 (HTTPError) when a body of LARGE_BODY_BYTES or more holds more structure bytes than allowed."""
    if len(raw) < LARGE_BODY_BYTES:
        return
    for chars, name, limit in _BOUNDS:
        count = sum(raw.count(c) for c in chars)
        if count > limit:
            raise HTTPError(
                400, f"request body holds {count} {name} bytes; a body of {LARGE_BODY_BYTES} bytes or "
                     f"more may hold at most {limit} (counted anywhere in the body, inside strings too)",
                code="json_too_complex")


def load_json(raw: bytes) -> Any:
    """The parsed body; 400 (HTTPError) when it is empty, too complex (check_json_structure) or not JSON."""
    if not raw:
        raise HTTPError(400, "request body is empty; expected a JSON object")
    check_json_structure(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"request body is not valid JSON: {exc}") from exc


class JsonTurns:
    """One per process (per event loop): large bodies are parsed one at a time, each after the loop
    has had a pass, so the loop never runs two such parses back to back."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def run(self, size: int, parse: Callable[..., T], *args: Any) -> T:
        """`parse(*args)` for a body of `size` bytes: at once when small, else in turn."""
        if size < LARGE_BODY_BYTES:
            return parse(*args)
        async with self._lock:
            await asyncio.sleep(0)  # what became ready meanwhile (/health) runs first
            return parse(*args)
