"""Retry rules and backoff: capped exponential with full jitter, deterministic under a seed."""

from __future__ import annotations

import random

from dpserve.gateway.retry import backoff_s, is_replica_failure, is_retryable_status


def test_statuses() -> None:
    assert [s for s in (200, 400, 404, 408, 429, 500, 502, 503, 504) if is_retryable_status(s)] == [
        429, 502, 503, 504]
    assert [s for s in (200, 400, 401, 404, 408, 422, 429, 500, 503) if is_replica_failure(s)] == [
        408, 429, 500, 503]


def test_backoff_is_capped_exponential_with_jitter() -> None:
    rng = random.Random(7)
    for i in range(12):
        ceiling = min(1.0, 0.01 * 2 ** i)
        samples = [backoff_s(i, 0.01, 1.0, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # jitter spans the range
    assert backoff_s(3, 0.01, 1.0, random.Random(1)) == backoff_s(3, 0.01, 1.0, random.Random(1))
