"""Proxy: admit, choose a replica, relay its response (streamed as it arrives), retry before first byte.

The in-flight count of a worker rises right after the choice and falls in a `finally` when the
response has ended, failed, or the client went away (the handler is then cancelled, which closes
the upstream connection, so the replica stops generating).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import orjson
from aiohttp import web

from dpserve.errors import HTTPError, error_body
from dpserve.gateway.admission import Admission, AdmissionContext
from dpserve.gateway.config import RetryConfig
from dpserve.gateway.health import HealthChecker
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.policies.base import Policy, RouteRequest
from dpserve.gateway.registry import WorkerRegistry
from dpserve.gateway.retry import backoff_s, is_replica_failure, is_retryable_status
from dpserve.gateway.routing_text import ParsedRequest, parse_request
from dpserve.gateway.upstream import ConnectFailed, UpstreamError, UpstreamPool, UpstreamResponse
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


@dataclass(frozen=True)
class _Failure:
    """A try that failed before anything reached the client: retry, or answer `error` at the end."""

    error: HTTPError
    reason: str


class Proxy:
    """Handles POST /v1/chat/completions and /v1/completions."""

    def __init__(self, retry: RetryConfig, registry: WorkerRegistry, policy: Policy, health: HealthChecker,
                 admission: Admission, metrics: GatewayMetrics, upstream: UpstreamPool,
                 rng: random.Random, clock: Callable[[], float]) -> None:
        self._cfg = retry
        self._registry = registry
        self._policy = policy
        self._health = health
        self._admission = admission
        self._metrics = metrics
        self._upstream = upstream
        self._rng = rng
        self._clock = clock

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self._admission.authenticate(request.headers)
        raw = await request.read()
        parsed = parse_request(request.path, raw, request.headers)
        ticket = await self._admission.admit(request.headers,
                                             AdmissionContext(parsed.prompt_chars, parsed.max_tokens))
        # No await between admit() and the in-flight increment inside _with_retries (admission relies on it).
        usage = Usage()
        start = self._clock()
        try:
            return await self._with_retries(request, raw, parsed, usage, start)
        finally:
            ticket.release(usage.prompt_tokens, usage.completion_tokens)
            self._metrics.duration.observe(self._clock() - start)

    async def _with_retries(self, request: web.Request, raw: bytes, parsed: ParsedRequest, usage: Usage,
                            start: float) -> web.StreamResponse:
        deadline = start + self._cfg.request_timeout_s
        tried: list[Worker] = []
        failure: _Failure | None = None
        for attempt in range(self._cfg.max_retries + 1):
            worker = self._choose(parsed.route, tried, parsed.model)
            if worker is None:
                break
            tried.append(worker)
            result = await self._attempt(request, raw, parsed, worker, usage, deadline)
            if isinstance(result, web.StreamResponse):
                return result
            failure = result
            if attempt == self._cfg.max_retries or self._clock() >= deadline:
                break
            self._metrics.retries[(result.reason,)] += 1
            await asyncio.sleep(backoff_s(attempt, self._cfg.retry_backoff_base_s,
                                          self._cfg.retry_backoff_max_s, self._rng))
        if failure is None:
            _raise_if_model_unknown(self._registry, parsed.model)
            raise HTTPError(503, "no healthy replica is available", code="no_healthy_worker",
                            headers={"Retry-After": "1"})
        self._metrics.retries_exhausted[()] += 1
        raise failure.error

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

    async def _attempt(self, request: web.Request, raw: bytes, parsed: ParsedRequest, worker: Worker,
                       usage: Usage, deadline: float) -> web.StreamResponse | _Failure:
        worker.in_flight += 1
        worker.breaker.on_dispatch()
        att = _Attempt(worker)
        try:
            return await self._exchange(request, raw, parsed, att, usage, deadline)
        finally:
            worker.in_flight -= 1
            _record_verdict(worker, att.verdict)
            self._policy.on_request_finished(worker, parsed.route, att.verdict != "failure")
            self._registry.notify_finished()
            self._admission.on_capacity_freed()

    async def _exchange(self, request: web.Request, raw: bytes, parsed: ParsedRequest, att: _Attempt,
                        usage: Usage, deadline: float) -> web.StreamResponse | _Failure:
        first_byte_s = max(0.001, min(self._cfg.first_byte_timeout_s, deadline - self._clock()))
        first_byte_at = self._clock() + first_byte_s
        try:
            body = await self._fetch(request, raw, parsed, att, first_byte_s, deadline)
            if isinstance(body, _Failure):
                return body
            assert att.resp is not None
            if body is None:  # a 200 stream: relayed chunk by chunk
                return await self._relay_stream(request, att.resp, att, usage, first_byte_at, deadline)
            return self._answer_whole(att.resp, body, att, usage)
        finally:
            if att.resp is not None and att.body_done:
                att.resp.release()
            elif att.resp is not None:
                att.resp.close()  # abort: the replica sees the disconnect and stops generating

    async def _fetch(self, request: web.Request, raw: bytes, parsed: ParsedRequest, att: _Attempt,
                     first_byte_s: float, deadline: float) -> bytes | _Failure | None:
        """Send; then read the whole body, unless the answer is a 200 stream (None)."""
        try:
            # Timeouts handed to the pool, not asyncio.timeout: see deadline_sweeper.py for why.
            att.resp = resp = await self._upstream.post(att.worker.url, request.path, raw,
                                                        _forwarded_headers(request), first_byte_s)
            if resp.status == 200 and parsed.stream:
                return None
            body = await resp.read(max(0.001, deadline - self._clock()))
        except ConnectFailed as exc:
            self._health.report_refused(att.worker)  # out of rotation now, not at the next probe
            return self._fail(att, 502, f"replica {att.worker.id} is unreachable: {exc}", "connect_error")
        except TimeoutError:
            if att.resp is not None:
                return self._fail(att, 504, f"replica {att.worker.id} timed out", "timeout")
            return self._fail(att, 504, f"replica {att.worker.id} did not respond within "
                                        f"{first_byte_s:.3g} s", "first_byte_timeout")
        except UpstreamError as exc:
            return self._fail(att, 502, f"replica {att.worker.id} failed: {exc}", "upstream_error")
        att.body_done = True
        return body

    def _fail(self, att: _Attempt, status: int, message: str, reason: str,
              headers: dict[str, str] | None = None) -> _Failure:
        att.verdict = "failure"
        self._metrics.requests[(att.worker.id, str(status))] += 1
        return _Failure(HTTPError(status, message, headers={**(headers or {}), WORKER_HEADER: att.worker.id}),
                        reason)

    def _answer_whole(self, resp: UpstreamResponse, body: bytes, att: _Attempt,
                      usage: Usage) -> web.StreamResponse | _Failure:
        status = resp.status
        if is_retryable_status(status):
            retry_after = resp.headers.get("retry-after")
            return self._fail(att, status, _upstream_message(body, status), f"status_{status}",
                              {"Retry-After": retry_after} if retry_after else None)
        att.verdict = "failure" if is_replica_failure(status) else "success"
        if status == 200:
            usage.from_body(body)
        self._metrics.requests[(att.worker.id, str(status))] += 1
        return web.Response(status=status, body=body, headers={
            "Content-Type": resp.headers.get("content-type", "application/json"),
            WORKER_HEADER: att.worker.id})

    async def _relay_stream(self, request: web.Request, resp: UpstreamResponse, att: _Attempt, usage: Usage,
                            first_byte_at: float, deadline: float) -> web.StreamResponse | _Failure:
        started = self._clock()
        try:
            async with asyncio.timeout(max(0.001, first_byte_at - started)):
                first = await resp.next_chunk()
        except (UpstreamError, TimeoutError) as exc:
            status = 504 if isinstance(exc, TimeoutError) else 502
            return self._fail(att, status, f"replica {att.worker.id} sent no stream data", "first_byte")
        if not first:
            return self._fail(att, 502, f"replica {att.worker.id} closed the stream at once", "first_byte")
        out = web.StreamResponse(status=200, headers={
            "Content-Type": resp.headers.get("content-type", "text/event-stream"),
            "Cache-Control": "no-cache", WORKER_HEADER: att.worker.id})
        tail = StreamTail()
        tail.add(first)
        try:
            await out.prepare(request)
            # Both sockets have TCP_NODELAY, and each chunk is written as it arrives: no Nagle
            # or buffering delay between replica and client.
            await out.write(first)
            self._metrics.ttft.observe(self._clock() - started)
            await self._pump_until(resp, out, att, tail, deadline)
            await out.write_eof()
        except ConnectionResetError:  # the client went away; _exchange aborts the upstream request
            return out
        tail.usage_into(usage)
        self._metrics.requests[(att.worker.id, "200")] += 1
        return out

    async def _pump_until(self, resp: UpstreamResponse, out: web.StreamResponse, att: _Attempt,
                          tail: StreamTail, deadline: float) -> None:
        """Relay the rest of the stream; a replica failure or --request-timeout-s ends it with an
        SSE error event and [DONE]."""
        try:
            async with asyncio.timeout(max(0.001, deadline - self._clock())):
                await self._pump(resp, out, att, tail)
        except (UpstreamError, TimeoutError) as exc:
            att.verdict = "failure"
            logger.warning("stream from replica %s ended early: %r", att.worker.id, exc)
            await out.write(_stream_error(att.worker.id, exc, tail.ends_at_event_boundary()))

    async def _pump(self, resp: UpstreamResponse, out: web.StreamResponse, att: _Attempt,
                    tail: StreamTail) -> None:
        while chunk := await resp.next_chunk():
            tail.add(chunk)
            await out.write(chunk)  # a client disconnect raises here; _exchange then aborts upstream
        att.verdict, att.body_done = "success", True


def _raise_if_model_unknown(registry: WorkerRegistry, model: str | None) -> None:
    """404 when every healthy worker's models are known and none serves `model`."""
    served = registry.served_models()
    if model is not None and served and model not in served:
        raise HTTPError(404, f"The model `{model}` does not exist; available: {', '.join(sorted(served))}",
                        code="model_not_found", param="model")


def _record_verdict(worker: Worker, verdict: str) -> None:
    if verdict == "success":
        worker.breaker.record_success()
    elif verdict == "failure":
        worker.breaker.record_failure()
    else:
        worker.breaker.record_neutral()


def _forwarded_headers(request: web.Request) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    for name in _FORWARDED_HEADERS:
        value = request.headers.get(name)  # one lookup per name, not `in` and then `[]`
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
