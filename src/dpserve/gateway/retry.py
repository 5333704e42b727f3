"""Retry rules (pure): which outcomes are retried, which count against a replica, and the backoff."""

from __future__ import annotations

import random

# A replica saying "not now": safe to send elsewhere, nothing reached the client.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES


def is_replica_failure(status: int) -> bool:
    """Statuses that count against the replica's circuit: 5xx, 408, 429 — never a client's 4xx."""
    return status >= 500 or status in (408, 429)


def backoff_s(retry_index: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Capped exponential backoff with full jitter: uniform(0, min(max, base * 2**retry_index))."""
    ceiling = min(max_s, base_s * (2 ** retry_index))
    return rng.uniform(0.0, ceiling)
