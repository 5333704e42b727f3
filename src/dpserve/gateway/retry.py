"""Retry and migration rules (pure): what happened → retry, migrate or give up, the verdict on the
replica, why; backoff.

`decide` (before the client got a byte) and `decide_break` (after: an armed stream that broke,
gateway/migration/) are the only places that say which outcomes are retried or migrated and which
count against a replica; the proxy reports what happened and does what they say. The rules:

- Retry only while nothing has reached the client (a stream is committed at its first chunk).
  After that, an armed response moves to another replica (`decide_break`), else it ends with an
  SSE error event.
- A replica that cannot be connected to is out of rotation at once (`mark_down`), not at its
  next health probe; every other failure only feeds its circuit breaker.
- A client's own 4xx is relayed and does not count against the replica; 408/429/5xx do.
- Timeouts are no verdict: health probes tell a hung replica from one busy with long answers
  (three long non-streaming answers used to open the breakers of healthy replicas).
- A client that left gives no verdict: the replica did nothing wrong, nor proved it is well.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

# A replica saying "not now": safe to send elsewhere, nothing reached the client.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class Happened:
    """What one try on one replica came to. Plain string constants, not an Enum: this runs on every
    request, and an Enum member costs ~0.3 µs per lookup and per hash on Python 3.11."""

    CONNECT_FAILED = "connect_error"        # refused, unreachable, or connect timed out
    NO_FIRST_BYTE = "first_byte_timeout"    # no response head (or first stream chunk) in time
    BROKEN_BEFORE_FIRST_BYTE = "upstream_error"  # connection lost or bad HTTP before the client got a byte
    BODY_TIMEOUT = "timeout"                # a whole answer started but did not finish in time
    ANSWERED = "answered"                   # a complete answer with `status`, not yet sent to the client
    BROKEN_AFTER_FIRST_BYTE = "mid_stream"  # the stream broke after bytes reached the client
    CLIENT_GONE = "client_gone"             # the client left; whatever the replica was doing is moot


class Verdict:
    """What the replica's circuit breaker hears about the try."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


HAPPENINGS = (Happened.CONNECT_FAILED, Happened.NO_FIRST_BYTE, Happened.BROKEN_BEFORE_FIRST_BYTE,
              Happened.BODY_TIMEOUT, Happened.ANSWERED, Happened.BROKEN_AFTER_FIRST_BYTE,
              Happened.CLIENT_GONE)


class Decision(NamedTuple):
    retry: bool     # try again (on another replica when one is left), nothing was sent yet
    verdict: str    # Verdict: for the replica's circuit breaker
    mark_down: bool  # take the replica out of rotation now (health), not at the next probe
    reason: str     # metrics label (`dpserve_retries_total{reason}`)


def decide(happened: str, status: int | None = None) -> Decision:
    """The rule for one try (`happened`: a Happened; `status` only with ANSWERED). Remembered per
    (happened, status): the answer never changes, and a request should not pay for it twice."""
    key = (happened, status)
    decision = _decided.get(key)
    if decision is None:
        decision = _decided[key] = _rule(happened, status)
    return decision


_decided: dict[tuple[str, int | None], Decision] = {}


def _rule(happened: str, status: int | None) -> Decision:
    if happened not in HAPPENINGS:
        raise ValueError(f"unknown outcome {happened!r}")
    if happened == Happened.ANSWERED:
        if status is None:
            raise ValueError("ANSWERED needs the status")
        failure = is_replica_failure(status)
        return Decision(status in RETRYABLE_STATUSES, Verdict.FAILURE if failure else Verdict.SUCCESS,
                        False, f"status_{status}")
    if happened == Happened.CLIENT_GONE:
        return Decision(False, Verdict.NEUTRAL, False, happened)
    if happened == Happened.BROKEN_AFTER_FIRST_BYTE:
        return Decision(False, Verdict.FAILURE, False, happened)
    if happened in (Happened.NO_FIRST_BYTE, Happened.BODY_TIMEOUT):
        return Decision(True, Verdict.NEUTRAL, False, happened)
    return Decision(True, Verdict.FAILURE, happened == Happened.CONNECT_FAILED, happened)


def is_replica_failure(status: int) -> bool:
    """Statuses that count against the replica's circuit: 5xx, 408, 429 — never a client's 4xx."""
    return status >= 500 or status in (408, 429)


def backoff_s(retry_index: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Capped exponential backoff with full jitter: uniform(0, min(max, base * 2**retry_index))."""
    ceiling = min(max_s, base_s * (2 ** retry_index))
    return rng.uniform(0.0, ceiling)


class Broke:
    """Why an armed stream broke after its first byte: the `reason` label of
    dpserve_stream_migrations_total."""

    UPSTREAM_ERROR = "upstream_error"    # connection reset or closed, bad HTTP
    ERROR_EVENT = "error_event"          # the replica sent an SSE error event mid-stream
    ENGINE_DOWN = "engine_down"          # ... saying its engine is down (a dpserve replica's 503)
    REQUEST_FAILED = "request_failed"    # ... saying this request failed on its own (a 4xx)
    INCOMPLETE = "incomplete"            # the response ended without a finish reason or [DONE]
    STALL = "stall"                      # no chunk for --stream-stall-timeout-s
    REPLICA_DOWN = "replica_down"        # health checks marked the replica down
    DRAIN = "drain"                      # removed, and its drain timeout passed
    REQUEST_TIMEOUT = "request_timeout"  # --request-timeout-s: the request's own limit, never migrated


# What the replica's breaker hears about a break: a stall, a drain or the request's own limit are
# no verdict on a replica that health checks still find up; a request failing on its own is not
# the replica's failure.
_BREAK_VERDICTS = {Broke.STALL: Verdict.NEUTRAL, Broke.DRAIN: Verdict.NEUTRAL,
                   Broke.REQUEST_TIMEOUT: Verdict.NEUTRAL, Broke.REQUEST_FAILED: Verdict.SUCCESS}


def break_decision(reason: str) -> Decision:
    """What a stream cut after its first byte (`reason`: a Broke) means for the try: never a retry
    (`decide_break` says what becomes of the response), and the breaker's verdict."""
    return Decision(False, _BREAK_VERDICTS.get(reason, Verdict.FAILURE), False, reason)


def unsent_break_decision(reason: str) -> Decision:
    """An armed stream that ended before any of it went to the client (`ResumeJob.sent_nothing`):
    retried like a failure before the first byte, unless the request failed on its own or its
    time is up; the breaker hears what it would of a break."""
    retry = reason not in (Broke.REQUEST_FAILED, Broke.REQUEST_TIMEOUT)
    return Decision(retry, _BREAK_VERDICTS.get(reason, Verdict.FAILURE), False, reason)


def error_event_reason(error: Any) -> str:
    """A mid-stream error event's `error` object → ENGINE_DOWN, REQUEST_FAILED or ERROR_EVENT."""
    code = error.get("code") if isinstance(error, dict) else None
    if code == "engine_down":
        return Broke.ENGINE_DOWN
    if code == "request_failed" or (isinstance(code, int) and 400 <= code < 500 and code not in (408, 429)):
        return Broke.REQUEST_FAILED
    return Broke.ERROR_EVENT


@dataclass(frozen=True)
class BreakFacts:
    """What happened to an armed stream and where its request stands."""

    reason: str                  # a Broke
    enabled: bool                # --stream-migration
    excluded: str | None         # why this request can never be resumed (migration/eligibility.py)
    migrations: int              # migrations already done for this request
    max_migrations: int
    finished: bool               # the client already has the finish reason
    remaining_tokens: int | None  # still allowed by max_tokens (None: the rest of the context)


class BreakDecision(NamedTuple):
    """`migrate`: resume on another replica; `finish`: end the response here (nothing was left to
    generate); `error`: the SSE error event (a JSON error for a non-streaming client). `outcome`
    is the metrics label ("" for migrate: known once the new replica answers)."""

    action: Literal["migrate", "finish", "error"]
    outcome: str


def decide_break(facts: BreakFacts) -> BreakDecision:
    """The rule for a stream cut after its first byte (the table is in the unit test)."""
    if facts.reason == Broke.REQUEST_TIMEOUT:
        return BreakDecision("error", "request_timeout")
    if facts.finished or (facts.remaining_tokens is not None and facts.remaining_tokens <= 0):
        return BreakDecision("finish", "completed")
    if facts.reason == Broke.REQUEST_FAILED:  # it would fail the same way elsewhere
        return BreakDecision("error", "request_failed")
    if not facts.enabled:
        return BreakDecision("error", "disabled")
    if facts.excluded is not None:
        return BreakDecision("error", "excluded")
    if facts.migrations >= facts.max_migrations:
        return BreakDecision("error", "exhausted")
    return BreakDecision("migrate", "")
