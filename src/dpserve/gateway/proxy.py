"""Proxy: admit, choose a replica, relay its response (streamed as it arrives), retry before first byte.

The in-flight count of a worker rises right after the choice and falls in a `finally` when the
response has ended, failed, or the client went away (the handler is then cancelled, which closes
the upstream connection, so the replica stops generating). What each try came to is reported to
`retry.decide`, which alone says whether to retry and what the replica's breaker and health hear.
A response cut after its first byte is continued on another replica (`migration/`): the proxy
arms the request (`_arm`), stream_relay.py relays and records it, and a break goes to
migration/resume.py, which `retry.decide_break` steers.

The tenant's `Authorization` never goes to a replica (it is the gateway's key, and a replica
added by someone else would collect it); `--replica-api-key` is sent instead when set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import cast

from dpserve.errors import HTTPError
from dpserve.gateway.admission import Admission, AdmissionContext
from dpserve.gateway.aliases import ModelAliases, StreamRenamer
from dpserve.gateway.attempt import Attempt, ProxiedRequest, TryFailure, fail
from dpserve.gateway.config import RetryConfig
from dpserve.gateway.exchange import ResponseSink
from dpserve.gateway.health import HealthChecker
from dpserve.gateway.loop_guard import hop_count
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.migration.config import MigrationConfig
from dpserve.gateway.migration.job import ResumeJob, StreamBreak, armed_body
from dpserve.gateway.migration.resume import resume
from dpserve.gateway.policies.base import Policy, RouteRequest
from dpserve.gateway.registry import WorkerRegistry
from dpserve.gateway.retry import Happened, Verdict, backoff_s, decide
from dpserve.gateway.routing_text import ParsedRequest, parse_request
from dpserve.gateway.stream_relay import StreamRelay, upstream_message
from dpserve.gateway.upstream import ConnectFailed, UpstreamError, UpstreamPool, UpstreamResponse
from dpserve.gateway.usage import Usage
from dpserve.gateway.worker import Worker
from dpserve.http_names import FORWARDED_HEADERS, HOPS_HEADER, RETRY_AFTER_HEADER, WORKER_HEADER
from dpserve.json_body import LARGE_BODY_BYTES, JsonTurns

_SUCCESS, _FAILURE = Verdict.SUCCESS, Verdict.FAILURE
# What `_try_workers` returns when no replica could be tried at all.
_NO_WORKER = TryFailure(HTTPError(503, "no healthy replica is available", code="no_healthy_worker",
                                  headers={"Retry-After": "1"}), decide(Happened.CLIENT_GONE))


class Proxy:
    """Handles POST /v1/chat/completions and /v1/completions."""

    def __init__(self, retry: RetryConfig, registry: WorkerRegistry, policy: Policy, health: HealthChecker,
                 admission: Admission, metrics: GatewayMetrics, upstream: UpstreamPool,
                 aliases: ModelAliases, rng: random.Random, clock: Callable[[], float],
                 migration: MigrationConfig | None = None, replica_api_key: str | None = None) -> None:
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
        self._replica_auth = None if replica_api_key is None else f"Bearer {replica_api_key}"
        self._streams = StreamRelay(metrics, health, aliases, self._migration, clock)
        self._json_turns = JsonTurns()

    async def handle(self, path: str, headers: Mapping[str, str], raw: bytes, sink: ResponseSink) -> None:
        """Answer one request through `sink`; HTTPError for an answer the gateway gives itself.
        The caller has authenticated the tenant (routes.py: Access.TENANT)."""
        hops = hop_count(headers)  # 508 before any work when requests loop through gateways
        parsed = (parse_request(path, raw, headers) if len(raw) < LARGE_BODY_BYTES  # no coroutine for most
                  else await self._json_turns.run(len(raw), parse_request, path, raw, headers))
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
        request = ProxiedRequest(path, self._forwarded_headers(headers, hops), raw, parsed, sink)
        if self._worth_resuming(parsed):
            self._arm(request)
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

    def _worth_resuming(self, parsed: ParsedRequest) -> bool:
        """Migration on and the request not excluded: streams always; a non-streaming request only
        when it may generate more than --resume-min-tokens (a shorter one is cheaper to retry whole
        than to stream internally)."""
        cfg = self._migration
        if not cfg.stream_migration or parsed.resume.excluded is not None:
            return False
        return parsed.stream or parsed.max_tokens is None or parsed.max_tokens > cfg.resume_min_tokens

    def _arm(self, request: ProxiedRequest) -> None:
        """Ask the replica for token ids (and stream a non-streaming request internally), and
        keep what the response needs to be resumed elsewhere."""
        alias = request.parsed.alias
        renamer = None if alias is None else StreamRenamer(self._aliases, alias)
        request.job = ResumeJob(request.path, request.body, request.parsed, self._migration,
                                self._metrics, self._clock, renamer)
        request.body = armed_body(request.body, request.parsed.stream)

    async def _with_retries(self, request: ProxiedRequest, usage: Usage, start: float) -> None:
        deadline = start + self._cfg.request_timeout_s
        tried: list[Worker] = []
        result = await self._try_workers(request, usage, deadline, tried)
        if isinstance(result, StreamBreak):
            def try_workers(req: ProxiedRequest) -> Awaitable[TryFailure | StreamBreak | None]:
                return self._try_workers(req, usage, deadline, tried)

            result = await resume(request, result, usage, lambda: self._clock() >= deadline,
                                  try_workers, _NO_WORKER)
        if result is None:
            return
        if result is _NO_WORKER:
            _raise_if_model_unknown(self._registry, self._aliases, request.parsed)
        elif result.error.code != _NO_WORKER.error.code:  # not "none left to try"
            self._metrics.retries_exhausted[()] += 1
        raise result.error

    async def _try_workers(self, request: ProxiedRequest, usage: Usage, deadline: float,
                           tried: list[Worker]) -> TryFailure | StreamBreak | None:
        """Send to a worker, retrying on others until something reached the client (None), a
        stream broke after its first byte, or `decide` says stop (the last failure)."""
        failure: TryFailure | None = None
        for attempt in range(self._cfg.max_retries + 1):
            worker = self._choose(request.parsed.route, tried, request.parsed.model)
            if worker is None:
                break
            tried.append(worker)
            result = await self._attempt(request, worker, usage, deadline)
            if not isinstance(result, TryFailure):
                return result
            failure = result
            if (not result.decision.retry or attempt == self._cfg.max_retries
                    or self._clock() >= deadline):
                return result
            self._metrics.retries[(result.decision.reason,)] += 1
            self._metrics.worker_retries[(worker.id,)] += 1
            await asyncio.sleep(backoff_s(attempt, self._cfg.retry_backoff_base_s,
                                          self._cfg.retry_backoff_max_s, self._rng))
        if failure is None:
            return _NO_WORKER
        # No replica left to try (the last one just failed): the same 503 as when none was up.
        return TryFailure(HTTPError(503, f"no healthy replica is available (last try: "
                                         f"{failure.error.message})", code="no_healthy_worker",
                                    headers={"Retry-After": "1"}), failure.decision)

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

    async def _attempt(self, request: ProxiedRequest, worker: Worker, usage: Usage,
                       deadline: float) -> TryFailure | StreamBreak | None:
        """None once the answer went to the client; a TryFailure when nothing did; a StreamBreak
        when an armed stream broke after its first byte."""
        worker.in_flight += 1
        worker.breaker.on_dispatch()
        att = Attempt(worker)
        try:
            return await self._exchange(request, att, usage, deadline)
        except asyncio.CancelledError:
            att.settle(Happened.CLIENT_GONE)
            raise
        finally:
            worker.in_flight -= 1
            worker.requests_ended += 1
            decision = att.decision or decide(Happened.CLIENT_GONE)
            if decision.mark_down:
                self._health.report_refused(worker)  # out of rotation now, not at the next probe
            _record_verdict(worker, decision.verdict)
            self._policy.on_request_finished(worker, request.parsed.route,
                                             decision.verdict != _FAILURE)
            self._registry.notify_finished()
            self._admission.on_capacity_freed()

    async def _exchange(self, request: ProxiedRequest, att: Attempt, usage: Usage,
                        deadline: float) -> TryFailure | StreamBreak | None:
        first_byte_s = max(0.001, min(self._cfg.first_byte_timeout_s, deadline - self._clock()))
        first_byte_at = self._clock() + first_byte_s
        try:
            body = await self._fetch(request, att, first_byte_s, deadline)
            if isinstance(body, TryFailure):
                return body
            assert att.resp is not None
            if body is None:  # a 200 stream: relayed chunk by chunk
                return await self._streams.relay(request, att, usage, first_byte_at, deadline)
            return await self._answer_whole(request, att.resp, body, att, usage)
        finally:
            if att.resp is not None and att.body_done:
                att.resp.release()
            elif att.resp is not None:
                att.resp.close()  # abort: the replica sees the disconnect and stops generating

    async def _fetch(self, request: ProxiedRequest, att: Attempt, first_byte_s: float,
                     deadline: float) -> bytes | TryFailure | None:
        """Send; then read the whole body, unless the answer is a 200 stream (None)."""
        try:
            # Timeouts handed to the pool, not asyncio.timeout: see deadline_sweeper.py for why.
            att.resp = resp = await self._upstream.post(att.worker.url, request.path, request.body,
                                                        request.forward, first_byte_s)
            if resp.status == 200 and (request.parsed.stream or request.job is not None):
                return None
            body = await resp.read(max(0.001, deadline - self._clock()))
        except ConnectFailed as exc:
            return fail(att, self._metrics, Happened.CONNECT_FAILED, 502,
                        f"replica {att.worker.id} is unreachable: {exc}")
        except TimeoutError:
            if att.resp is not None:
                return fail(att, self._metrics, Happened.BODY_TIMEOUT, 504,
                            f"replica {att.worker.id} timed out")
            return fail(att, self._metrics, Happened.NO_FIRST_BYTE, 504,
                        f"replica {att.worker.id} did not respond within {first_byte_s:.3g} s")
        except UpstreamError as exc:
            return fail(att, self._metrics, Happened.BROKEN_BEFORE_FIRST_BYTE, 502,
                        f"replica {att.worker.id} failed: {exc}")
        att.body_done = True
        return body

    async def _answer_whole(self, request: ProxiedRequest, resp: UpstreamResponse, body: bytes, att: Attempt,
                            usage: Usage) -> TryFailure | None:
        status = resp.status
        if att.settle(Happened.ANSWERED, status).retry:
            retry_after = resp.headers.get(RETRY_AFTER_HEADER)
            return fail(att, self._metrics, Happened.ANSWERED, status, upstream_message(body, status),
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
