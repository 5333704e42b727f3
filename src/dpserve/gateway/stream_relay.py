"""StreamRelay: a replica's 200 stream from its first chunk to its end, as the client gets it.

Unarmed (migration off, or a request it never applies to) the bytes are relayed as they arrive
and a break ends the stream with an SSE error event and [DONE]. Armed, the request's ResumeJob
relays it (migration/job.py) and a break after the first byte comes back as a StreamBreak, which
the proxy hands to migration/resume.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson

from dpserve.errors import HTTPError, error_body
from dpserve.gateway.aliases import ModelAliases, StreamRenamer
from dpserve.gateway.attempt import Attempt, ProxiedRequest, TryFailure, fail
from dpserve.gateway.exchange import ResponseSink
from dpserve.gateway.health import HealthChecker
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.migration.config import MigrationConfig
from dpserve.gateway.migration.job import ResumeJob, StreamBreak
from dpserve.gateway.retry import Broke, Decision, Happened, break_decision, unsent_break_decision
from dpserve.gateway.upstream import ReplicaInterrupted, UpstreamError, UpstreamResponse
from dpserve.gateway.usage import StreamTail, Usage
from dpserve.http_names import WORKER_HEADER

logger = logging.getLogger(__name__)
# Breaks that may mean the replica is hung or dead: health probes it at once. Armed streams move
# on, so no new request may ever find its port closed: its breaker opens on these very breaks.
_SUSPECT = frozenset({Broke.STALL, Broke.UPSTREAM_ERROR, Broke.INCOMPLETE})


class StreamRelay:
    """Relays the streams of the proxy's requests; shares the proxy's metrics, health and clock."""

    def __init__(self, metrics: GatewayMetrics, health: HealthChecker, aliases: ModelAliases,
                 migration: MigrationConfig, clock: Callable[[], float]) -> None:
        self._metrics = metrics
        self._health = health
        self._aliases = aliases
        self._migration = migration
        self._clock = clock

    async def relay(self, request: ProxiedRequest, att: Attempt, usage: Usage, first_byte_at: float,
                    deadline: float) -> TryFailure | StreamBreak | None:
        """Wait for the first chunk (until `first_byte_at`), then relay the stream to its end."""
        assert att.resp is not None
        started = self._clock()
        try:
            async with asyncio.timeout(max(0.001, first_byte_at - started)):
                first = await att.resp.next_chunk()
        except TimeoutError:
            return fail(att, self._metrics, Happened.NO_FIRST_BYTE, 504,
                        f"replica {att.worker.id} sent no stream data")
        except UpstreamError:
            return fail(att, self._metrics, Happened.BROKEN_BEFORE_FIRST_BYTE, 502,
                        f"replica {att.worker.id} sent no stream data")
        if not first:
            return fail(att, self._metrics, Happened.BROKEN_BEFORE_FIRST_BYTE, 502,
                        f"replica {att.worker.id} closed the stream at once")
        if request.job is not None:
            return await self._relay_job(request, request.job, att, first, started, usage, deadline)
        await self._relay_plain(request, att, first, started, usage, deadline)
        return None

    async def _relay_plain(self, request: ProxiedRequest, att: Attempt, first: bytes, started: float,
                           usage: Usage, deadline: float) -> None:
        resp, out = att.resp, request.sink
        assert resp is not None
        tail = StreamTail()
        tail.add(first)
        alias = request.parsed.alias
        renamer = None if alias is None else StreamRenamer(self._aliases, alias)
        try:
            await out.start({"Content-Type": resp.headers.get("content-type", "text/event-stream"),
                             "Cache-Control": "no-cache", WORKER_HEADER: att.worker.id})
            # Both sockets have TCP_NODELAY, and each chunk is written as it arrives: no Nagle
            # or buffering delay between replica and client.
            await out.write(first if renamer is None else renamer.feed(first))
            self._metrics.ttft.observe(self._clock() - started)
            await self._pump_until(resp, out, att, tail, renamer, deadline, request)
            await out.end()
        except ConnectionResetError:  # the client went away; the proxy aborts the upstream request
            att.settle(Happened.CLIENT_GONE)
            return
        tail.usage_into(usage)
        self._metrics.requests[(att.worker.id, "200")] += 1

    async def _pump_until(self, resp: UpstreamResponse, out: ResponseSink, att: Attempt,
                          tail: StreamTail, renamer: StreamRenamer | None, deadline: float,
                          request: ProxiedRequest) -> None:
        """Relay the rest of the stream; a replica failure or --request-timeout-s ends it with an
        SSE error event and [DONE]."""
        try:
            async with asyncio.timeout(max(0.001, deadline - self._clock())):
                await _pump(resp, out, att, tail, renamer)
        except (UpstreamError, TimeoutError) as exc:
            att.settle(Happened.BROKEN_AFTER_FIRST_BYTE)
            logger.warning("stream from replica %s ended early: %r", att.worker.id, exc)
            if not isinstance(exc, TimeoutError):  # counted as a migration that did not happen
                outcome = "disabled" if request.parsed.resume.excluded is None else "excluded"
                self._metrics.migrations[(Broke.UPSTREAM_ERROR, outcome)] += 1
            if renamer is not None:
                await out.write(renamer.flush())  # the cut event's start, as it came
            await out.write(_stream_error(att.worker.id, exc, tail.ends_at_event_boundary()))

    async def _relay_job(self, request: ProxiedRequest, job: ResumeJob, att: Attempt, first: bytes,
                         started: float, usage: Usage, deadline: float) -> TryFailure | StreamBreak | None:
        """An armed request's stream, relayed by its ResumeJob; a break after the first byte comes
        back as a StreamBreak."""
        assert att.resp is not None
        att.resp.watch_stall(self._migration.stream_stall_timeout_s)
        head, sink = {WORKER_HEADER: att.worker.id}, request.sink
        try:
            async with asyncio.timeout(max(0.001, deadline - self._clock())):
                reason = await job.relay(att.resp, first, sink, head, started)
            if reason is not None:
                return self._ended(job, sink, att, reason, "")
            if job.later_streams:
                job.on_resumed(att.worker)
            att.body_done = True
            att.settle(Happened.ANSWERED, 200)
            self._metrics.requests[(att.worker.id, "200")] += 1
            job.usage_into(usage)
            await job.finish(sink, head)
        except ConnectionResetError:  # the client went away; the proxy aborts the upstream request
            att.settle(Happened.CLIENT_GONE)
        except ReplicaInterrupted as exc:
            return self._ended(job, sink, att, exc.reason, "")
        except UpstreamError as exc:
            return self._ended(job, sink, att, Broke.UPSTREAM_ERROR, str(exc))
        except TimeoutError:
            return self._ended(job, sink, att, Broke.REQUEST_TIMEOUT, "the request's time limit passed")
        return None

    def _ended(self, job: ResumeJob, sink: ResponseSink, att: Attempt, reason: str,
               detail: str) -> TryFailure | StreamBreak:
        """An armed stream ended early: a break to resume from, or — nothing of it reached the
        client — a failure like one before the first byte (retried whole, the client unaware)."""
        if not job.sent_nothing(sink):
            brk = self._break(att, reason, detail, 502, break_decision(reason))
            if job.later_streams:
                job.on_resumed(att.worker)
            return brk
        error = job.state.error if isinstance(job.state.error, dict) else {}
        code, said = error.get("code"), error.get("message")
        status = (504 if reason == Broke.REQUEST_TIMEOUT else 502 if reason != Broke.REQUEST_FAILED
                  else code if isinstance(code, int) and 400 <= code < 500 else 422)
        decision = unsent_break_decision(reason)
        self._break(att, reason, detail, status, decision)
        message = f"replica {att.worker.id} failed before its first token ({reason}"
        message += f": {detail})" if detail else ")"
        if isinstance(said, str) and said:
            message += f": {said}"
        return TryFailure(HTTPError(status, message, headers={WORKER_HEADER: att.worker.id}), decision)

    def _break(self, att: Attempt, reason: str, detail: str, status: int, decision: Decision) -> StreamBreak:
        att.decision = decision
        if reason in _SUSPECT:
            self._health.report_suspect(att.worker)
        self._metrics.requests[(att.worker.id, str(status))] += 1
        logger.info("stream from replica %s broke: %s %s", att.worker.id, reason, detail)
        return StreamBreak(reason, att.worker, detail)


async def _pump(resp: UpstreamResponse, out: ResponseSink, att: Attempt, tail: StreamTail,
                renamer: StreamRenamer | None) -> None:
    while chunk := await resp.next_chunk():
        tail.add(chunk)
        if renamer is not None:
            chunk = renamer.feed(chunk)  # held back until its SSE event is complete
        await out.write(chunk)  # a client disconnect raises here; the proxy then aborts upstream
    if renamer is not None:
        await out.write(renamer.flush())
    att.body_done = True
    att.settle(Happened.ANSWERED, 200)


def _stream_error(worker_id: str, exc: BaseException, at_boundary: bool) -> bytes:
    """An SSE error event the openai client raises on, then [DONE]: never a silent cut."""
    status = 504 if isinstance(exc, TimeoutError) else 502
    message = (f"replica {worker_id} timed out mid-stream" if status == 504
               else f"replica {worker_id} failed mid-stream: {exc.__class__.__name__}")
    event = b"data: " + orjson.dumps(error_body(status, message)) + b"\n\ndata: [DONE]\n\n"
    return event if at_boundary else b"\n\n" + event


def upstream_message(body: bytes, status: int) -> str:
    """The message of a replica's JSON error body, else a plain one naming its status."""
    try:
        err = orjson.loads(body).get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return f"replica answered {status}"
