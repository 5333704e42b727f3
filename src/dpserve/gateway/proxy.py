"""Proxy: admit, choose a replica, relay its response (streamed as it arrives), retry before first byte.

The in-flight count of a worker rises right after the choice and falls in a `finally` when the
response has ended, failed, or the client went away (the handler is then cancelled, which closes
the upstream connection, so the replica stops generating). What each try came to is reported to
`retry.decide`, which alone says whether to retry and what the replica's breaker and health hear.

The tenant's `Authorization` never goes to a replica (it is the gateway's key, and a replica
added by someone else would collect it); `--replica-api-key` is sent instead when set.
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
from dpserve.gateway.loop_guard import hop_count
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.policies.base import Policy, RouteRequest
from dpserve.gateway.registry import WorkerRegistry
from dpserve.gateway.retry import Decision, Happened, Verdict, backoff_s, decide
from dpserve.gateway.routing_text import ParsedRequest, parse_request
from dpserve.gateway.upstream import ConnectFailed, UpstreamError, UpstreamPool, UpstreamResponse
from dpserve.gateway.usage import StreamTail, Usage
from dpserve.gateway.worker import Worker
from dpserve.http_names import FORWARDED_HEADERS, HOPS_HEADER, RETRY_AFTER_HEADER, WORKER_HEADER
from dpserve.json_body import JsonTurns

logger = logging.getLogger(__name__)
_SUCCESS, _FAILURE = Verdict.SUCCESS, Verdict.FAILURE


@dataclass(slots=True)
class _Attempt:
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
class _Request:
    """One client request as the proxy sends it: path, headers for the replica, body, and the sink."""

    path: str
    forward: dict[str, str]
    body: bytes
    parsed: ParsedRequest
    sink: ResponseSink


@dataclass(frozen=True)
class _Failure:
    """A try that failed before anything reached the client: retry, or answer `error` at the end."""

    error: HTTPError
    decision: Decision


class Proxy:
    """Handles POST /v1/chat/completions and /v1/completions."""

    def __init__(self, retry: RetryConfig, registry: WorkerRegistry, policy: Policy, health: HealthChecker,
                 admission: Admission, metrics: GatewayMetrics, upstream: UpstreamPool,
                 aliases: ModelAliases, rng: random.Random, clock: Callable[[], float],
                 replica_api_key: str | None = None) -> None:
        self._cfg = retry
        self._registry = registry
        self._policy = policy
        self._health = health
        self._admission = admission
        self._metrics = metrics
        self._upstream = upstream
        self._aliases = aliases
        self._rng = rng
        self._clock = clock
        self._replica_auth = None if replica_api_key is None else f"Bearer {replica_api_key}"
        self._json_turns = JsonTurns()

    async def handle(self, path: str, headers: Mapping[str, str], raw: bytes, sink: ResponseSink) -> None:
        """Answer one request through `sink`; HTTPError for an answer the gateway gives itself.
        The caller has authenticated the tenant (routes.py: Access.TENANT)."""
        hops = hop_count(headers)  # 508 before any work when requests loop through gateways
        parsed = await self._json_turns.run(len(raw), parse_request, path, raw, headers)
        if self._aliases:  # no alias configured: not even a lookup
            raw, parsed = self._resolve_alias(raw, parsed)
        route = await self._policy.prepare(parsed.route)  # e.g. tokenised off the loop
        if route is not parsed.route:
            parsed = dataclasses.replace(parsed, route=route)
        ticket = await self._admission.admit(headers,
                                             AdmissionContext(parsed.prompt_chars, parsed.max_tokens))
        # No await between admit() and the in-flight increment inside _with_retries (admission relies on it).
        usage = Usage()
        start = self._clock()
        request = _Request(path, self._forwarded_headers(headers, hops), raw, parsed, sink)
        try:
            await self._with_retries(request, usage, start)
        finally:
            ticket.release(usage.prompt_tokens, usage.completion_tokens)
            self._metrics.duration.observe(self._clock() - start)

    def _forwarded_headers(self, client_headers: Mapping[str, str], hops: int) -> dict[str, str]:
        """What the replica gets: the body's type, the hop count, FORWARDED_HEADERS, and the
        replica's own key when one is set — never the client's Authorization."""
        headers = {"Content-Type": "application/json", HOPS_HEADER: str(hops + 1)}
        for name in FORWARDED_HEADERS:
            value = client_headers.get(name)  # one lookup per name, not `in` and then `[]`
            if value is not None:
                headers[name] = value
        if self._replica_auth is not None:
            headers["Authorization"] = self._replica_auth
        return headers

    def _resolve_alias(self, raw: bytes, parsed: ParsedRequest) -> tuple[bytes, ParsedRequest]:
        """An aliased `model`: route on the served name and send that upstream."""
        target = self._aliases.target(parsed.model)
        if target is None:
            return raw, parsed
        return (self._aliases.request_body(raw, target),
                dataclasses.replace(parsed, model=target, alias=parsed.model))

    async def _with_retries(self, request: _Request, usage: Usage, start: float) -> None:
        parsed = request.parsed
        deadline = start + self._cfg.request_timeout_s
        tried: list[Worker] = []
        failure: _Failure | None = None
        for attempt in range(self._cfg.max_retries + 1):
            worker = self._choose(parsed.route, tried, parsed.model)
            if worker is None:
                break
            tried.append(worker)
            failure = await self._attempt(request, worker, usage, deadline)
            if failure is None:
                return
            if (not failure.decision.retry or attempt == self._cfg.max_retries
                    or self._clock() >= deadline):
                self._metrics.retries_exhausted[()] += 1
                raise failure.error
            self._metrics.retries[(failure.decision.reason,)] += 1
            self._metrics.worker_retries[(worker.id,)] += 1
            await asyncio.sleep(backoff_s(attempt, self._cfg.retry_backoff_base_s,
                                          self._cfg.retry_backoff_max_s, self._rng))
        if failure is None:
            _raise_if_model_unknown(self._registry, self._aliases, parsed)
        # No replica left to try (none was, or the last one just failed): the same 503 whether the
        # outage began before this request or during it.
        last = "" if failure is None else f" (last try: {failure.error.message})"
        raise HTTPError(503, f"no healthy replica is available{last}", code="no_healthy_worker",
                        headers={"Retry-After": "1"})

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
                       deadline: float) -> _Failure | None:
        """None once the answer went to the client; a _Failure when nothing did."""
        worker.in_flight += 1
        worker.breaker.on_dispatch()
        att = _Attempt(worker)
        try:
            return await self._exchange(request, att, usage, deadline)
        except asyncio.CancelledError:
            att.settle(Happened.CLIENT_GONE)
            raise
        finally:
            worker.in_flight -= 1
            decision = att.decision or decide(Happened.CLIENT_GONE)
            if decision.mark_down:
                self._health.report_refused(worker)  # out of rotation now, not at the next probe
            _record_verdict(worker, decision.verdict)
            self._policy.on_request_finished(worker, request.parsed.route,
                                             decision.verdict != _FAILURE)
            self._registry.notify_finished()
            self._admission.on_capacity_freed()

    async def _exchange(self, request: _Request, att: _Attempt, usage: Usage,
                        deadline: float) -> _Failure | None:
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
            if resp.status == 200 and request.parsed.stream:
                return None
            body = await resp.read(max(0.001, deadline - self._clock()))
        except ConnectFailed as exc:
            return self._fail(att, Happened.CONNECT_FAILED, 502,
                              f"replica {att.worker.id} is unreachable: {exc}")
        except TimeoutError:
            if att.resp is not None:
                return self._fail(att, Happened.BODY_TIMEOUT, 504, f"replica {att.worker.id} timed out")
            return self._fail(att, Happened.NO_FIRST_BYTE, 504, f"replica {att.worker.id} did not respond "
                                                                 f"within {first_byte_s:.3g} s")
        except UpstreamError as exc:
            return self._fail(att, Happened.BROKEN_BEFORE_FIRST_BYTE, 502,
                              f"replica {att.worker.id} failed: {exc}")
        att.body_done = True
        return body

    def _fail(self, att: _Attempt, happened: str, status: int, message: str,
              headers: dict[str, str] | None = None, upstream_status: int | None = None) -> _Failure:
        decision = att.settle(happened, upstream_status)
        self._metrics.requests[(att.worker.id, str(status))] += 1
        return _Failure(HTTPError(status, message, headers={**(headers or {}), WORKER_HEADER: att.worker.id}),
                        decision)

    async def _answer_whole(self, request: _Request, resp: UpstreamResponse, body: bytes, att: _Attempt,
                            usage: Usage) -> _Failure | None:
        status = resp.status
        if att.settle(Happened.ANSWERED, status).retry:
            retry_after = resp.headers.get(RETRY_AFTER_HEADER)
            return self._fail(att, Happened.ANSWERED, status, _upstream_message(body, status),
                              {"Retry-After": retry_after} if retry_after else None, upstream_status=status)
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
                            deadline: float) -> _Failure | None:
        assert att.resp is not None
        resp = att.resp
        started = self._clock()
        try:
            async with asyncio.timeout(max(0.001, first_byte_at - started)):
                first = await resp.next_chunk()
        except TimeoutError:
            return self._fail(att, Happened.NO_FIRST_BYTE, 504,
                              f"replica {att.worker.id} sent no stream data")
        except UpstreamError:
            return self._fail(att, Happened.BROKEN_BEFORE_FIRST_BYTE, 502,
                              f"replica {att.worker.id} sent no stream data")
        if not first:
            return self._fail(att, Happened.BROKEN_BEFORE_FIRST_BYTE, 502,
                              f"replica {att.worker.id} closed the stream at once")
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
            await self._pump_until(resp, out, att, tail, renamer, deadline)
            await out.end()
        except ConnectionResetError:  # the client went away; _exchange aborts the upstream request
            att.settle(Happened.CLIENT_GONE)
            return None
        tail.usage_into(usage)
        self._metrics.requests[(att.worker.id, "200")] += 1
        return None

    async def _pump_until(self, resp: UpstreamResponse, out: ResponseSink, att: _Attempt,
                          tail: StreamTail, renamer: StreamRenamer | None, deadline: float) -> None:
        """Relay the rest of the stream; a replica failure or --request-timeout-s ends it with an
        SSE error event and [DONE]."""
        try:
            async with asyncio.timeout(max(0.001, deadline - self._clock())):
                await self._pump(resp, out, att, tail, renamer)
        except (UpstreamError, TimeoutError) as exc:
            att.settle(Happened.BROKEN_AFTER_FIRST_BYTE)
            logger.warning("stream from replica %s ended early: %r", att.worker.id, exc)
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
        att.body_done = True
        att.settle(Happened.ANSWERED, 200)


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
    if verdict == _SUCCESS:
        worker.breaker.record_success()
    elif verdict == _FAILURE:
        worker.breaker.record_failure()
    else:
        worker.breaker.record_neutral()


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
