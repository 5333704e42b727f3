"""The migrate / finish / error decision: its whole table."""

from __future__ import annotations

import pytest

from dpserve.gateway.migration.decision import (
    DRAIN,
    ERROR_EVENT,
    INCOMPLETE,
    REPLICA_DOWN,
    REQUEST_TIMEOUT,
    STALL,
    UPSTREAM_ERROR,
    BreakFacts,
    counts_against_replica,
    decide,
)

BASE = {"reason": UPSTREAM_ERROR, "enabled": True, "excluded": None, "migrations": 0, "max_migrations": 3,
        "finished": False, "remaining_tokens": 10}


@pytest.mark.parametrize(("changes", "action", "outcome"), [
    ({}, "migrate", ""),
    ({"reason": STALL}, "migrate", ""),
    ({"remaining_tokens": None}, "migrate", ""),  # the rest of the context
    ({"migrations": 2}, "migrate", ""),
    ({"migrations": 3}, "error", "exhausted"),
    ({"max_migrations": 0}, "error", "exhausted"),
    ({"excluded": "tools"}, "error", "excluded"),
    ({"enabled": False}, "error", "disabled"),
    ({"finished": True}, "finish", "completed"),  # only usage / [DONE] were missing
    ({"remaining_tokens": 0}, "finish", "completed"),
    ({"finished": True, "enabled": False}, "finish", "completed"),
    ({"reason": REQUEST_TIMEOUT}, "error", "request_timeout"),  # the request's own limit first
    ({"reason": REQUEST_TIMEOUT, "finished": True}, "error", "request_timeout"),
])
def test_decide(changes: dict[str, object], action: str, outcome: str) -> None:
    verdict = decide(BreakFacts(**{**BASE, **changes}))  # type: ignore[arg-type]
    assert (verdict.action, verdict.outcome) == (action, outcome)


@pytest.mark.parametrize(("reason", "counts"), [
    (UPSTREAM_ERROR, True), (ERROR_EVENT, True), (INCOMPLETE, True), (REPLICA_DOWN, True),
    (STALL, False), (DRAIN, False), (REQUEST_TIMEOUT, False)])
def test_what_counts_against_the_replica(reason: str, counts: bool) -> None:
    assert counts_against_replica(reason) is counts
