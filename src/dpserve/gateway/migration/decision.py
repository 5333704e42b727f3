"""Migrate, finish, or end with the error event: the one decision for a response cut after its
first byte (pure; its table of cases is in the unit test)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Why a stream broke (the `reason` label of dpserve_stream_migrations_total).
UPSTREAM_ERROR = "upstream_error"    # connection reset or closed, bad HTTP
ERROR_EVENT = "error_event"          # the replica sent an SSE error event mid-stream
INCOMPLETE = "incomplete"            # the response ended without a finish reason or [DONE]
STALL = "stall"                      # no chunk for --stream-stall-timeout-s
REPLICA_DOWN = "replica_down"        # health checks marked the replica down
DRAIN = "drain"                      # removed, and its drain timeout passed
REQUEST_TIMEOUT = "request_timeout"  # --request-timeout-s: the request's own limit, never migrated

Action = Literal["migrate", "finish", "error"]


@dataclass(frozen=True)
class BreakFacts:
    """What happened and where the request stands."""

    reason: str
    enabled: bool                # --stream-migration
    excluded: str | None         # why this request can never be resumed (eligibility.py)
    migrations: int              # migrations already done for this request
    max_migrations: int
    finished: bool               # the client already has the finish reason
    remaining_tokens: int | None  # still allowed by max_tokens (None: the rest of the context)


@dataclass(frozen=True)
class Verdict:
    """`migrate`: resume on another replica; `finish`: end the response here (nothing was left
    to generate); `error`: today's SSE error event (a JSON error for a non-streaming client).
    `outcome` is the metrics label ("" for migrate: known once the new replica answers)."""

    action: Action
    outcome: str


def decide(facts: BreakFacts) -> Verdict:
    if facts.reason == REQUEST_TIMEOUT:
        return Verdict("error", "request_timeout")
    if facts.finished or (facts.remaining_tokens is not None and facts.remaining_tokens <= 0):
        return Verdict("finish", "completed")
    if not facts.enabled:
        return Verdict("error", "disabled")
    if facts.excluded is not None:
        return Verdict("error", "excluded")
    if facts.migrations >= facts.max_migrations:
        return Verdict("error", "exhausted")
    return Verdict("migrate", "")


def counts_against_replica(reason: str) -> bool:
    """The replica failed (its breaker hears it); a stall, a drain or the request's own limit are
    no verdict on a replica that health checks still find up."""
    return reason in (UPSTREAM_ERROR, ERROR_EVENT, INCOMPLETE, REPLICA_DOWN)
