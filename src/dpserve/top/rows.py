"""The replica rows of a `/dashboard/data` document, sorted by a key the user picks (pure, no terminal)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dpserve.natural_order import natural_key

# sort key → the JSON field it sorts on
SORT_FIELDS = {"name": "label", "tokens": "generation_tokens_per_s", "kv": "kv_cache_usage",
               "waiting": "waiting", "running": "running", "inflight": "in_flight", "ttft": "ttft_p99_s",
               "errors": "errors"}
SORT_KEYS = tuple(SORT_FIELDS)
# key pressed → sort key (p: TTFT p99)
KEY_BINDINGS = {"n": "name", "t": "tokens", "k": "kv", "w": "waiting", "r": "running", "i": "inflight",
                "p": "ttft", "e": "errors"}


def sorted_replicas(replicas: Sequence[dict[str, Any]], key: str, reverse: bool) -> list[dict[str, Any]]:
    """Rows ordered by `key` (names naturally: r2 before r10); rows without the value go last."""
    field = SORT_FIELDS[key]
    known = [r for r in replicas if r.get(field) is not None]
    unknown = [r for r in replicas if r.get(field) is None]
    if field == "label":
        known.sort(key=lambda r: natural_key(str(r["label"])), reverse=reverse)
    else:
        known.sort(key=lambda r: (float(r[field]), natural_key(str(r["label"]))), reverse=reverse)
    return known + unknown


def next_sort_key(key: str) -> str:
    return SORT_KEYS[(SORT_KEYS.index(key) + 1) % len(SORT_KEYS)]

