"""Proxy: admit, choose a replica, relay its response (streamed as it arrives), retry before first byte.

The in-flight count of a worker rises right after the choice and falls in a `finally` when the
response has ended, failed, or the client went away (the handler is then cancelled, which closes
the upstream connection, so the replica stops generating). A response cut after its first byte
is continued on another replica (`migration/`): the proxy arms the request (`_arm`), records
the relayed stream (`_pump_armed`) and hands a break to `_resume`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

import orjson

from dpserve.errors import HTTPError, error_body
from dpserve.gateway.admission import Admission, AdmissionContext
from dpserve.gateway.aliases import ModelAliases, StreamRenamer
from dpserve.gateway.config import RetryConfig
from dpserve.gateway.exchange import ResponseSink
from dpserve.gateway.health import HealthChecker
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.migration.config import MigrationConfig
from dpserve.gateway.migration.decision import (
    ERROR_EVENT,
    REQUEST_TIMEOUT,
    STALL,
    UPSTREAM_ERROR,
    Verdict,
    counts_against_replica,
)
from dpserve.gateway.migration.job import ResumeJob, StreamBreak, armed_body
from dpserve.gateway.policies.base import Policy, RouteRequest
from dpserve.gateway.registry import WorkerRegistry
from dpserve.gateway.retry import backoff_s, is_replica_failure, is_retryable_status
from dpserve.gateway.routing_text import ParsedRequest, parse_request
from dpserve.gateway.sse import ERROR_EVENT_START
from dpserve.gateway.upstream import (
    ConnectFailed,
    ReplicaInterrupted,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
)
from dpserve.gateway.usage import StreamTail, Usage
from dpserve.gateway.worker import Worker

logger = logging.getLogger(__name__)

WORKER_HEADER = "x-dpserve-worker"
_FORWARDED_HEADERS = ("Authorization", "X-Request-Id", "X-Session-Id")


@dataclass(slots=True)
class _Attempt:
    """One try on one worker: the breaker verdict, the upstream response and whether its body was
    fully read (then its connection goes back to the pool, else it is closed)."""

    worker: Worker
    verdict: str = "neutral"  # success | failure | neutral (client left, no verdict)
    resp: UpstreamResponse | None = None
    body_done: bool = False


@dataclass(slots=True)
class _Request:
    """One client request as the proxy sends it: path, headers for the replica, body, and the sink."""

    path: str
    forward: dict[str, str]
    body: bytes
    parsed: ParsedRequest
    sink: ResponseSink
    job: ResumeJob | None = None  # armed: the response may be continued on another replica


@dataclass(frozen=True)
class _Failure:
    """A try that failed before anything reached the client: retry, or answer `error` at the end."""

    error: HTTPError
    reason: str


_NO_WORKER = _Failure(HTTPError(503, "no healthy replica is available", code="no_healthy_worker",
                                headers={"Retry-After": "1"}), "no_worker")


class Proxy:
    """Handles POST /v1/chat/completions and /v1/completions."""

    def __init__(self, retry: RetryConfig, registry: WorkerRegistry, policy: Policy, health: HealthChecker,
                 admission: Admission, metrics: GatewayMetrics, upstream: UpstreamPool,
                 aliases: ModelAliases, rng: random.Random, clock: Callable[[], float],
                 migration: MigrationConfig | None = None) -> None:
        self._cfg = retry
        self._migration = migration or MigrationConfig()
        self._registry = registry
        self._policy = policy
        self._health = health
        self._admission = admission
        self._metrics = metrics
        self._upstream = upstream
        self._aliases = aliases
        self._rng = rng
        self._clock = clock

    async def handle(self, path: str, headers: Mapping[str, str], raw: bytes, sink: ResponseSink) -> None:
        """Answer one request through `sink`; HTTPError for an answer the gateway gives itself."""
        self._admission.authenticate(headers)
        parsed = parse_request(path, raw, headers)
        if self._aliases:  # no alias configured: not even a lookup
            raw, parsed = self._resolve_alias(raw, parsed)
        ticket = await self._admission.admit(headers,
                                             AdmissionContext(parsed.prompt_chars, parsed.max_tokens))
        # No await between admit() and the in-flight increment inside _with_retries (admission relies on it).
        usage = Usage()
        start = self._clock()
        request = _Request(path, _forwarded_headers(headers), raw, parsed, sink)
        if self._migration.stream_migration and parsed.resume.excluded is None:
            self._arm(request)
        try:
            await self._with_retries(request, usage, start)
        finally:
            ticket.release(usage.prompt_tokens, usage.completion_tokens)
            self._metrics.duration.observe(self._clock() - start)

    def _resolve_alias(self, raw: bytes, parsed: ParsedRequest) -> tuple[bytes, ParsedRequest]:
        """An aliased `model`: route on the served name and send that upstream."""
        target = self._aliases.target(parsed.model)
        if target is None:
            return raw, parsed
        return (self._aliases.request_body(raw, target),
                dataclasses.replace(parsed, model=target, alias=parsed.model))

    def _arm(self, request: _Request) -> None:
        """Ask the replica for token ids (and stream a non-streaming request internally), and
        keep what the response needs to be resumed elsewhere."""
        alias = request.parsed.alias
        renamer = None if alias is None else StreamRenamer(self._aliases, alias)
        request.job = ResumeJob(request.path, request.body, request.parsed, self._migration,
                                self._metrics, self._clock, renamer)
        request.body = armed_body(request.body, request.parsed.stream)

    async def _with_retries(self, request: _Request, usage: Usage, start: float) -> None:
        deadline = start + self._cfg.request_timeout_s
        tried: list[Worker] = []
        result = await self._try_workers(request, usage, deadline, tried)
        if isinstance(result, StreamBreak):
            result = await self._resume(request, result, usage, deadline, tried)
        if result is None:
            return
        if result is _NO_WORKER:
            _raise_if_model_unknown(self._registry, self._aliases, request.parsed)
        else:
            self._metrics.retries_exhausted[()] += 1
        raise result.error

    async def _try_workers(self, request: _Request, usage: Usage, deadline: float,
                           tried: list[Worker]) -> _Failure | StreamBreak | None:
        """Send to a worker, retrying on others until something reached the client (None), a
        stream broke after its first byte, or retries ran out (the last failure)."""
        failure = _NO_WORKER
        for attempt in range(self._cfg.max_retries + 1):
            worker = self._choose(request.parsed.route, tried, request.parsed.model)
            if worker is None:
                break
            tried.append(worker)
            result = await self._attempt(request, worker, usage, deadline)
            if not isinstance(result, _Failure):
                return result
            failure = result
            if attempt == self._cfg.max_retries or self._clock() >= deadline:
                break
            self._metrics.retries[(result.reason,)] += 1
            await asyncio.sleep(backoff_s(attempt, self._cfg.retry_backoff_base_s,
                                          self._cfg.retry_backoff_max_s, self._rng))
        return failure

    async def _resume(self, request: _Request, brk: StreamBreak, usage: Usage, deadline: float,
                      tried: list[Worker]) -> _Failure | None:
        """Continue a response cut after its first byte on other replicas, until it is complete
        or the decision (migration/decision.py) ends it; a _Failure for a non-streaming client."""
        job = request.job
        assert job is not None
        try:
            while (verdict := job.on_break(brk, self._clock() >= deadline)).action == "migrate":
                cont = job.continuation()
                if isinstance(cont, str):
                    job.count(brk.reason, cont)
                    verdict = Verdict("error", cont)
                    break
                job.begin_stream(cont)
                route = RouteRequest(cont.route_text, request.parsed.route.session_key)
                follow = dataclasses.replace(request, path=cont.path, body=cont.body,
                                             parsed=dataclasses.replace(request.parsed, route=route))
                result = await self._try_workers(follow, usage, deadline, tried)
                if not isinstance(result, StreamBreak):
                    if result is not None:
                        verdict = Verdict("error", "no_replica" if result is _NO_WORKER else "failed")
                        job.count(brk.reason, verdict.outcome)
                        break
                    return None
                brk = result
            error = await job.end(verdict, brk, request.sink, {WORKER_HEADER: brk.worker.id})
            return None if error is None else _Failure(error, brk.reason)
        except ConnectionResetError:  # the client went away: nothing more to do for it
            return None
        finally:
            usage.prompt_tokens, usage.completion_tokens = job.usage_counts()

    def _choose(self, route: RouteRequest, tried: list[Worker], model: str | None) -> Worker | None:
        """Among workers serving `model`, prefer those not yet tried; the one that just failed
        only when it is the last one left."""
        candidates = self._registry.candidates(exclude=tried, model=model)
        if not candidates and tried:
            candidates = (self._registry.candidates(exclude=tried[-1:], model=model)
                          or self._registry.candidates(model=model))
        if not candidates:
            return None
        choice = self._policy.select(candidates, route)
        self._metrics.decision(choice.reason)
        return cast(Worker, choice.worker)

    async def _attempt(self, request: _Request, worker: Worker, usage: Usage,
                       deadline: float) -> _Failure | StreamBreak | None:
        """None once the answer went to the client; a _Failure when nothing did; a StreamBreak
        when an armed stream broke after its first byte."""
        worker.in_flight += 1
        worker.breaker.on_dispatch()
        att = _Attempt(worker)
        try:
            return await self._exchange(request, att, usage, deadline)
        finally:
            worker.in_flight -= 1
            _record_verdict(worker, att.verdict)
            self._policy.on_request_finished(worker, request.parsed.route, att.verdict != "failure")
            self._registry.notify_finished()
            self._admission.on_capacity_freed()

    async def _exchange(self, request: _Request, att: _Attempt, usage: Usage,
                        deadline: float) -> _Failure | StreamBreak | None:
        first_byte_s = max(0.001, min(self._cfg.first_byte_timeout_s, deadline - self._clock()))
        first_byte_at = self._clock() + first_byte_s
        try:
            body = await self._fetch(request, att, first_byte_s, deadline)
            if isinstance(body, _Failure):
                return body
            assert att.resp is not None
            if body is None:  # a 200 stream: relayed chunk by chunk
                return await self._relay_stream(request, att, usage, first_byte_at, deadline)
            return await self._answer_whole(request, att.resp, body, att, usage)
        finally:
            if att.resp is not None and att.body_done:
                att.resp.release()
            elif att.resp is not None:
                att.resp.close()  # abort: the replica sees the disconnect and stops generating

    async def _fetch(self, request: _Request, att: _Attempt, first_byte_s: float,
                     deadline: float) -> bytes | _Failure | None:
        """Send; then read the whole body, unless the answer is a 200 stream (None)."""
        try:
            # Timeouts handed to the pool, not asyncio.timeout: see deadline_sweeper.py for why.
            att.resp = resp = await self._upstream.post(att.worker.url, request.path, request.body,
                                                        request.forward, first_byte_s)
            if resp.status == 200 and (request.parsed.stream or request.job is not None):
                return None
            body = await resp.read(max(0.001, deadline - self._clock()))
        except ConnectFailed as exc:
            self._health.report_refused(att.worker)  # out of rotation now, not at the next probe
            return self._fail(att, 502, f"replica {att.worker.id} is unreachable: {exc}", "connect_error")
        except TimeoutError:
            # Not a verdict on the replica (neutral for its breaker): health checks tell a hung
            # replica from one that is busy with long answers.
            if att.resp is not None:
                return self._fail(att, 504, f"replica {att.worker.id} timed out", "timeout", neutral=True)
            return self._fail(att, 504, f"replica {att.worker.id} did not respond within "
                                        f"{first_byte_s:.3g} s", "first_byte_timeout", neutral=True)
        except UpstreamError as exc:
            return self._fail(att, 502, f"replica {att.worker.id} failed: {exc}", "upstream_error")
        att.body_done = True
        return body

    def _fail(self, att: _Attempt, status: int, message: str, reason: str,
              headers: dict[str, str] | None = None, *, neutral: bool = False) -> _Failure:
        att.verdict = "neutral" if neutral else "failure"
        self._metrics.requests[(att.worker.id, str(status))] += 1
        return _Failure(HTTPError(status, message, headers={**(headers or {}), WORKER_HEADER: att.worker.id}),
                        reason)

    async def _answer_whole(self, request: _Request, resp: UpstreamResponse, body: bytes, att: _Attempt,
                            usage: Usage) -> _Failure | None:
        status = resp.status
        if is_retryable_status(status):
            retry_after = resp.headers.get("retry-after")
            return self._fail(att, status, _upstream_message(body, status), f"status_{status}",
                              {"Retry-After": retry_after} if retry_after else None)
        att.verdict = "failure" if is_replica_failure(status) else "success"
        if status == 200:
            usage.from_body(body)
        alias = request.parsed.alias
        if alias is not None:
            body = self._aliases.response_body(body, alias)
        self._metrics.requests[(att.worker.id, str(status))] += 1
        content_type = resp.headers.get("content-type", "application/json")
        await request.sink.whole(status, {"Content-Type": content_type, WORKER_HEADER: att.worker.id}, body)
        return None

    async def _relay_stream(self, request: _Request, att: _Attempt, usage: Usage, first_byte_at: float,
                            deadline: float) -> _Failure | StreamBreak | None:
        assert att.resp is not None
        resp = att.resp
        started = self._clock()
        try:
            async with asyncio.timeout(max(0.001, first_byte_at - started)):
                first = await resp.next_chunk()
        except (UpstreamError, TimeoutError) as exc:
            status = 504 if isinstance(exc, TimeoutError) else 502
            return self._fail(att, status, f"replica {att.worker.id} sent no stream data", "first_byte",
                              neutral=status == 504)
        if not first:
            return self._fail(att, 502, f"replica {att.worker.id} closed the stream at once", "first_byte")
        if request.job is not None:
            return await self._relay_job(request, request.job, att, first, started, usage, deadline)
        out = request.sink
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
            await self._pump_until(resp, out, att, tail, renamer, deadline, request.parsed)
            await out.end()
        except ConnectionResetError:  # the client went away; _exchange aborts the upstream request
            return None
        tail.usage_into(usage)
        self._metrics.requests[(att.worker.id, "200")] += 1
        return None

    async def _pump_until(self, resp: UpstreamResponse, out: ResponseSink, att: _Attempt,
                          tail: StreamTail, renamer: StreamRenamer | None, deadline: float,
                          parsed: ParsedRequest) -> None:
        """Relay the rest of the stream; a replica failure or --request-timeout-s ends it with an
        SSE error event and [DONE] (an unarmed request: migration off, or one it never applies to)."""
        try:
            async with asyncio.timeout(max(0.001, deadline - self._clock())):
                await self._pump(resp, out, att, tail, renamer)
        except (UpstreamError, TimeoutError) as exc:
            att.verdict = "failure"
            logger.warning("stream from replica %s ended early: %r", att.worker.id, exc)
            if not isinstance(exc, TimeoutError):
                outcome = "disabled" if parsed.resume.excluded is None else "excluded"
                self._metrics.migrations[(UPSTREAM_ERROR, outcome)] += 1
            if renamer is not None:
                await out.write(renamer.flush())  # the cut event's start, as it came
            await out.write(_stream_error(att.worker.id, exc, tail.ends_at_event_boundary()))

    async def _pump(self, resp: UpstreamResponse, out: ResponseSink, att: _Attempt,
                    tail: StreamTail, renamer: StreamRenamer | None) -> None:
        while chunk := await resp.next_chunk():
            tail.add(chunk)
            if renamer is not None:
                chunk = renamer.feed(chunk)  # held back until its SSE event is complete
            await out.write(chunk)  # a client disconnect raises here; _exchange then aborts upstream
        if renamer is not None:
            await out.write(renamer.flush())
        att.verdict, att.body_done = "success", True

    async def _relay_job(self, request: _Request, job: ResumeJob, att: _Attempt, first: bytes,
                         started: float, usage: Usage, deadline: float) -> _Failure | StreamBreak | None:
        """An armed request's stream, relayed by its ResumeJob (migration/job.py); a break after
        the first byte comes back as a StreamBreak for `_resume`."""
        assert att.resp is not None
        if first.startswith(ERROR_EVENT_START):  # failed before any token: retried, unseen
            message = _upstream_message(first[6:], 502)
            return self._fail(att, 502, f"replica {att.worker.id} failed: {message}", ERROR_EVENT)
        att.resp.watch_stall(self._migration.stream_stall_timeout_s)
        if job.later_streams:
            job.on_resumed(att.worker)
        head = {WORKER_HEADER: att.worker.id}
        try:
            async with asyncio.timeout(max(0.001, deadline - self._clock())):
                reason = await job.relay(att.resp, first, request.sink, head, started)
            if reason is not None:
                return self._break(att, reason, "")
            att.verdict, att.body_done = "success", True
            self._metrics.requests[(att.worker.id, "200")] += 1
            job.usage_into(usage)
            await job.finish(request.sink, head)
        except ConnectionResetError:
            return None  # the client went away; _exchange aborts the upstream request
        except UpstreamError as exc:
            return self._break(att, *_break_of(exc))
        except TimeoutError:
            return self._break(att, REQUEST_TIMEOUT, "the request's time limit passed")
        return None

    def _break(self, att: _Attempt, reason: str, detail: str) -> StreamBreak:
        att.verdict = "failure" if counts_against_replica(reason) else "neutral"
        if reason == STALL:
            self._health.report_stall(att.worker)
        self._metrics.requests[(att.worker.id, "502")] += 1
        logger.info("stream from replica %s broke: %s %s", att.worker.id, reason, detail)
        return StreamBreak(reason, att.worker, detail)


def _break_of(exc: UpstreamError) -> tuple[str, str]:
    """(reason, detail) of a stream cut by a transport error or by the gateway itself."""
    if isinstance(exc, ReplicaInterrupted):
        return exc.reason, ""
    return UPSTREAM_ERROR, str(exc)


def _raise_if_model_unknown(registry: WorkerRegistry, aliases: ModelAliases, parsed: ParsedRequest) -> None:
    """404 when every healthy worker's models are known and none serves the requested model."""
    served = registry.served_models()
    model = parsed.model
    if model is not None and served and model not in served:
        available = served | {alias for alias, target in aliases.items() if target in served}
        asked = f"`{model}`" if parsed.alias is None else f"`{parsed.alias}` (an alias of `{model}`)"
        raise HTTPError(404, f"The model {asked} does not exist; available: {', '.join(sorted(available))}",
                        code="model_not_found", param="model")


def _record_verdict(worker: Worker, verdict: str) -> None:
    if verdict == "success":
        worker.breaker.record_success()
    elif verdict == "failure":
        worker.breaker.record_failure()
    else:
        worker.breaker.record_neutral()


def _forwarded_headers(client_headers: Mapping[str, str]) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    for name in _FORWARDED_HEADERS:
        value = client_headers.get(name)  # one lookup per name, not `in` and then `[]`
        if value is not None:
            headers[name] = value
    return headers


def _stream_error(worker_id: str, exc: BaseException, at_boundary: bool) -> bytes:
    """An SSE error event the openai client raises on, then [DONE]: never a silent cut."""
    status = 504 if isinstance(exc, TimeoutError) else 502
    message = (f"replica {worker_id} timed out mid-stream" if status == 504
               else f"replica {worker_id} failed mid-stream: {exc.__class__.__name__}")
    event = b"data: " + orjson.dumps(error_body(status, message)) + b"\n\ndata: [DONE]\n\n"
    return event if at_boundary else b"\n\n" + event


def _upstream_message(body: bytes, status: int) -> str:
    try:
        err = orjson.loads(body).get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return f"replica answered {status}"
