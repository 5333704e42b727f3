"""Model aliases: a client-facing `model` name mapped to the name the replicas serve.

A request whose `model` is an alias is routed as if it asked for the target; the body sent
upstream names the target, and the answer (JSON body, or every SSE event of a stream) names the
alias again, so the client sees only the name it used. Requests without an alias are untouched.
Rewrites are byte-level on the top-level `"model":"..."` pair, so the rest of a relayed response
stays byte-exact (an escaped quote inside a JSON string can never form that pattern).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from dpserve.gateway.sse import event_end


def parse_aliases(entries: Iterable[str]) -> dict[str, str]:
    """`ALIAS=SERVED_NAME` entries → {alias: served name}; ValueError says what is wrong."""
    out: dict[str, str] = {}
    for entry in entries:
        alias, sep, target = entry.partition("=")
        alias, target = alias.strip(), target.strip()
        if not sep:
            raise ValueError(f"{entry!r} is not ALIAS=SERVED_NAME")
        if not alias or not target:
            raise ValueError(f"{entry!r}: the alias and the served name must both be non-empty")
        if alias == target:
            raise ValueError(f"{entry!r}: an alias cannot map to itself")
        if alias in out:
            raise ValueError(f"alias {alias!r} is given twice")
        out[alias] = target
    chained = sorted(a for a, t in out.items() if t in out)
    if chained:
        raise ValueError(f"aliases do not chain: {', '.join(chained)} map(s) to another alias")
    return out


def _model_pattern(name: str) -> re.Pattern[bytes]:
    """`"model"` : `"<name>"` with the JSON spacing any server may use (none, or after the colon)."""
    return re.compile(rb'"model"\s*:\s*' + re.escape(orjson.dumps(name)))


class ModelAliases:
    """The alias table of one gateway, with the byte rewrites for both directions."""

    def __init__(self, aliases: Mapping[str, str]) -> None:
        self._targets = dict(aliases)
        self._patterns: dict[str, re.Pattern[bytes]] = {}

    def __bool__(self) -> bool:
        return bool(self._targets)

    def target(self, model: str | None) -> str | None:
        """The served name when `model` is an alias, else None."""
        return None if model is None else self._targets.get(model)

    def items(self) -> list[tuple[str, str]]:
        return list(self._targets.items())

    def request_body(self, raw: bytes, target: str) -> bytes:
        """The client body with `model` set to the served name (re-encoded: parsed already)."""
        body = orjson.loads(raw)
        body["model"] = target
        return orjson.dumps(body)

    def response_body(self, body: bytes, alias: str) -> bytes:
        """A whole JSON answer with its top-level `model` (the first one) renamed back to `alias`."""
        target = self._targets[alias]
        return self._pattern(target).sub(_replacement(alias), body, count=1)

    def events(self, data: bytes, alias: str) -> bytes:
        """Complete SSE events with every `"model":"<target>"` renamed back to `alias`."""
        return self._pattern(self._targets[alias]).sub(_replacement(alias), data)

    def cards(self, served: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """`/v1/models` entries for the aliases whose target is served: the target's card, renamed."""
        return [{**served[target], "id": alias} for alias, target in self._targets.items()
                if target in served and alias not in served]

    def _pattern(self, target: str) -> re.Pattern[bytes]:
        pattern = self._patterns.get(target)
        if pattern is None:
            pattern = self._patterns[target] = _model_pattern(target)
        return pattern


def _replacement(alias: str) -> Callable[[re.Match[bytes]], bytes]:
    # A function, not a template: `re` would read backslashes in the alias as group references.
    pair = b'"model":' + orjson.dumps(alias)
    return lambda _match: pair


class StreamRenamer:
    """Renames `model` in a relayed SSE stream without ever splitting a match across reads.

    Bytes after the last event boundary are held until the event is complete (a client cannot
    use half an event anyway); `flush()` returns what is left when the stream ends.
    """

    def __init__(self, aliases: ModelAliases, alias: str) -> None:
        self._aliases = aliases
        self._alias = alias
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk if self._held else chunk
        end = event_end(data)
        self._held = data[end:]
        return self._aliases.events(data[:end], self._alias) if end else b""

    def flush(self) -> bytes:
        data, self._held = self._held, b""
        return self._aliases.events(data, self._alias) if data else b""
