"""Retry rules: the table of `decide` cases, and backoff (capped exponential, full jitter, seeded)."""

from __future__ import annotations

import random

import pytest

from dpserve.gateway.retry import (
    HAPPENINGS,
    Decision,
    Happened,
    Verdict,
    backoff_s,
    decide,
    is_replica_failure,
)

F, S, N = Verdict.FAILURE, Verdict.SUCCESS, Verdict.NEUTRAL


@pytest.mark.parametrize("happened, status, expected", [
    # nothing reached the client: retried, counted against the replica
    (Happened.CONNECT_FAILED, None, Decision(True, F, True, "connect_error")),
    (Happened.NO_FIRST_BYTE, None, Decision(True, F, False, "first_byte_timeout")),
    (Happened.BROKEN_BEFORE_FIRST_BYTE, None, Decision(True, F, False, "upstream_error")),
    (Happened.BODY_TIMEOUT, None, Decision(True, F, False, "timeout")),
    # a replica saying "not now"
    (Happened.ANSWERED, 429, Decision(True, F, False, "status_429")),
    (Happened.ANSWERED, 502, Decision(True, F, False, "status_502")),
    (Happened.ANSWERED, 503, Decision(True, F, False, "status_503")),
    (Happened.ANSWERED, 504, Decision(True, F, False, "status_504")),
    # relayed: a replica failure, or the client's own doing, or fine
    (Happened.ANSWERED, 500, Decision(False, F, False, "status_500")),
    (Happened.ANSWERED, 508, Decision(False, F, False, "status_508")),
    (Happened.ANSWERED, 408, Decision(False, F, False, "status_408")),
    (Happened.ANSWERED, 400, Decision(False, S, False, "status_400")),
    (Happened.ANSWERED, 404, Decision(False, S, False, "status_404")),
    (Happened.ANSWERED, 200, Decision(False, S, False, "status_200")),
    # bytes reached the client: never retried
    (Happened.BROKEN_AFTER_FIRST_BYTE, None, Decision(False, F, False, "mid_stream")),
    # the client left: no verdict on the replica
    (Happened.CLIENT_GONE, None, Decision(False, N, False, "client_gone")),
])
def test_decide(happened: str, status: int | None, expected: Decision) -> None:
    assert decide(happened, status) == expected
    assert decide(happened, status) is decide(happened, status)  # remembered, not recomputed


def test_every_outcome_has_a_rule_and_nothing_else_does() -> None:
    for happened in HAPPENINGS:
        decision = decide(happened, 200 if happened == Happened.ANSWERED else None)
        assert decision.reason and decision.verdict in (Verdict.SUCCESS, Verdict.FAILURE, Verdict.NEUTRAL)
    with pytest.raises(ValueError):
        decide("something else")
    with pytest.raises(ValueError):
        decide(Happened.ANSWERED)  # needs the status


def test_replica_failures_are_5xx_408_429_never_a_clients_4xx() -> None:
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
