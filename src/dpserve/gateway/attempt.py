"""One proxied request and one try of it on one replica: what the proxy and its stream relay share.

A try ends in one of three ways: the answer reached the client (None), nothing did (`TryFailure`:
retry or answer its error), or an armed stream broke after its first byte (`StreamBreak`, see
migration/). Whatever it came to, `Attempt.decision` says what the replica's breaker hears.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpserve.errors import HTTPError
from dpserve.gateway.exchange import ResponseSink
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.migration.job import ResumeJob
from dpserve.gateway.retry import Decision, decide
from dpserve.gateway.routing_text import ParsedRequest
from dpserve.gateway.upstream import UpstreamResponse
from dpserve.gateway.worker import Worker
from dpserve.http_names import WORKER_HEADER


@dataclass(slots=True)
class Attempt:
    """One try on one worker: what `decide` said about it, the upstream response and whether its
    body was fully read (then its connection goes back to the pool, else it is closed)."""

    worker: Worker
    decision: Decision | None = None  # None until the try's outcome is known
    resp: UpstreamResponse | None = None
    body_done: bool = False

    def settle(self, happened: str, status: int | None = None) -> Decision:
        self.decision = decide(happened, status)
        return self.decision


@dataclass(slots=True)
class ProxiedRequest:
    """One client request as the proxy sends it: path, headers for the replica, body, and the sink."""

    path: str
    forward: dict[str, str]
    body: bytes
    parsed: ParsedRequest
    sink: ResponseSink
    job: ResumeJob | None = None  # armed: the response may be continued on another replica


@dataclass(frozen=True)
class TryFailure:
    """A try that failed before anything reached the client: retry, or answer `error` at the end."""

    error: HTTPError
    decision: Decision


def fail(att: Attempt, metrics: GatewayMetrics, happened: str, status: int, message: str,
         headers: dict[str, str] | None = None, upstream_status: int | None = None) -> TryFailure:
    """The try came to `happened` and the client got nothing: `decide` settles it, and the error
    the client gets if no other try succeeds names the replica."""
    decision = att.settle(happened, upstream_status)
    metrics.requests[(att.worker.id, str(status))] += 1
    return TryFailure(HTTPError(status, message, headers={**(headers or {}), WORKER_HEADER: att.worker.id}),
                      decision)
