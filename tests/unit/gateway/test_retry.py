"""Retry and migration rules: the tables of `decide` and `decide_break`, and backoff (capped
exponential, full jitter, seeded)."""

from __future__ import annotations

import random

import pytest

from dpserve.gateway.retry import (
    HAPPENINGS,
    BreakFacts,
    Broke,
    Decision,
    Happened,
    Verdict,
    backoff_s,
    break_decision,
    decide,
    decide_break,
    error_event_reason,
    is_replica_failure,
)

F, S, N = Verdict.FAILURE, Verdict.SUCCESS, Verdict.NEUTRAL


@pytest.mark.parametrize("happened, status, expected", [
    # nothing reached the client: retried, counted against the replica
    (Happened.CONNECT_FAILED, None, Decision(True, F, True, "connect_error")),
    (Happened.NO_FIRST_BYTE, None, Decision(True, N, False, "first_byte_timeout")),  # health judges
    (Happened.BROKEN_BEFORE_FIRST_BYTE, None, Decision(True, F, False, "upstream_error")),
    (Happened.BODY_TIMEOUT, None, Decision(True, N, False, "timeout")),
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


BREAK = {"reason": Broke.UPSTREAM_ERROR, "enabled": True, "excluded": None, "migrations": 0,
         "max_migrations": 3, "finished": False, "remaining_tokens": 10}


@pytest.mark.parametrize(("changes", "action", "outcome"), [
    ({}, "migrate", ""),
    ({"reason": Broke.STALL}, "migrate", ""),
    ({"reason": Broke.ENGINE_DOWN}, "migrate", ""),
    ({"reason": Broke.ERROR_EVENT}, "migrate", ""),
    ({"remaining_tokens": None}, "migrate", ""),  # the rest of the context
    ({"migrations": 2}, "migrate", ""),
    ({"migrations": 3}, "error", "exhausted"),
    ({"max_migrations": 0}, "error", "exhausted"),
    ({"excluded": "tools"}, "error", "excluded"),
    ({"enabled": False}, "error", "disabled"),
    ({"reason": Broke.REQUEST_FAILED}, "error", "request_failed"),  # it would fail elsewhere too
    ({"finished": True}, "finish", "completed"),  # only usage / [DONE] were missing
    ({"remaining_tokens": 0}, "finish", "completed"),
    ({"finished": True, "enabled": False}, "finish", "completed"),
    ({"reason": Broke.REQUEST_TIMEOUT}, "error", "request_timeout"),  # the request's own limit first
    ({"reason": Broke.REQUEST_TIMEOUT, "finished": True}, "error", "request_timeout"),
])
def test_decide_break(changes: dict[str, object], action: str, outcome: str) -> None:
    decision = decide_break(BreakFacts(**{**BREAK, **changes}))  # type: ignore[arg-type]
    assert (decision.action, decision.outcome) == (action, outcome)


@pytest.mark.parametrize(("reason", "verdict"), [
    (Broke.UPSTREAM_ERROR, F), (Broke.ERROR_EVENT, F), (Broke.ENGINE_DOWN, F), (Broke.INCOMPLETE, F),
    (Broke.REPLICA_DOWN, F), (Broke.STALL, N), (Broke.DRAIN, N), (Broke.REQUEST_TIMEOUT, N),
    (Broke.REQUEST_FAILED, S)])
def test_what_a_break_tells_the_replicas_breaker(reason: str, verdict: str) -> None:
    assert break_decision(reason) == Decision(False, verdict, False, reason)


@pytest.mark.parametrize(("error", "reason"), [
    ({"message": "engine died", "code": "engine_down"}, Broke.ENGINE_DOWN),
    ({"message": "bad logits", "code": "request_failed"}, Broke.REQUEST_FAILED),
    ({"message": "bad", "code": 400}, Broke.REQUEST_FAILED),
    ({"message": "busy", "code": 429}, Broke.ERROR_EVENT),
    ({"message": "oops", "code": 500}, Broke.ERROR_EVENT),
    ({"message": "vLLM's shape", "type": "BadRequestError"}, Broke.ERROR_EVENT),
    ("not an object", Broke.ERROR_EVENT),
])
def test_an_error_events_code_names_the_break(error: object, reason: str) -> None:
    assert error_event_reason(error) == reason
