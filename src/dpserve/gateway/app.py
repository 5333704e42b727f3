"""Gateway app factory: wires registry, policy, health, load polling, admission and the proxy to routes."""

from __future__ import annotations

import asyncio
import hmac
import random
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from dpserve.aio import BackgroundTasks
from dpserve.errors import HTTPError, error_middleware
from dpserve.gateway.admission import Admission, build_admission
from dpserve.gateway.aliases import ModelAliases, parse_aliases
from dpserve.gateway.circuit_breaker import CircuitState
from dpserve.gateway.config import GatewayConfig
from dpserve.gateway.exchange import AiohttpSink
from dpserve.gateway.front_server import FrontServer
from dpserve.gateway.health import HealthChecker
from dpserve.gateway.loads import LoadPoller
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.migration.decision import DRAIN, REPLICA_DOWN
from dpserve.gateway.policies import build_policy
from dpserve.gateway.policies.base import Policy
from dpserve.gateway.proxy import Proxy
from dpserve.gateway.registry import DuplicateWorker, WorkerRegistry
from dpserve.gateway.routing_text import CHAT_PATH, COMPLETIONS_PATH
from dpserve.gateway.served_models import ModelDiscovery, model_list
from dpserve.gateway.upstream import UpstreamPool
from dpserve.gateway.worker import Worker, check_worker_url

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")
# Connections for health probes, load polls and /v1/models (proxied requests use UpstreamPool).
_PROBE_CONNECTIONS = 256
MAX_BODY_BYTES = 64 * 1024 * 1024


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class Gateway:
    """Everything one gateway process holds; built by `build_app`, started on app startup."""

    def __init__(self, config: GatewayConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.policy: Policy = build_policy(config.routing, clock=clock)
        self.metrics = GatewayMetrics(config.routing.policy)
        self.aliases = ModelAliases(parse_aliases(config.model_aliases))
        self.registry = WorkerRegistry(self.policy, config.breaker, clock, config.admission.worker_cap,
                                       on_transition=self._on_transition)
        self.admission: Admission = build_admission(config.admission, self.registry, clock=clock)
        # Retry jitter draws from its own stream, so it never shifts the policy's choices.
        seed = config.routing.seed
        self.rng = random.Random(None if seed is None else seed + 1)
        self._http: aiohttp.ClientSession | None = None
        self._health: HealthChecker | None = None
        self._poller: LoadPoller | None = None
        self._proxy: Proxy | None = None
        self._upstream: UpstreamPool | None = None
        self._models: ModelDiscovery | None = None
        self._background = BackgroundTasks()

    @property
    def proxy(self) -> Proxy:
        assert self._proxy is not None, "gateway not started"
        return self._proxy

    @property
    def upstream(self) -> UpstreamPool:
        assert self._upstream is not None, "gateway not started"
        return self._upstream

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "gateway not started"
        return self._http

    @property
    def health(self) -> HealthChecker:
        assert self._health is not None, "gateway not started"
        return self._health

    async def start(self) -> None:
        # Health checks, load polls and /v1/models share one pooled aiohttp client; proxied
        # requests go through the leaner UpstreamPool (see upstream.py).
        connector = aiohttp.TCPConnector(limit=_PROBE_CONNECTIONS, limit_per_host=0, keepalive_timeout=60.0)
        self._http = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                           skip_auto_headers=("User-Agent",))
        hc = self.config.health
        self._health = HealthChecker(hc, self._http, self.registry.all, self._on_health_change,
                                     self._on_probe)
        self._poller = LoadPoller(self.registry.all, self._http, hc.load_poll_interval_s,
                                  hc.health_check_timeout_s)
        self._upstream = UpstreamPool(self.config.retry.connect_timeout_s)
        self._proxy = Proxy(self.config.retry, self.registry, self.policy, self._health, self.admission,
                            self.metrics, self._upstream, self.aliases, self.rng, self.clock,
                            self.config.migration)
        for i, url in enumerate(self.config.worker_urls):
            self.registry.add(url, self.config.weight_of(i))
        self._models = ModelDiscovery(self._http, hc.health_check_timeout_s)
        await self._health.check_all()  # serve with the replicas that are up now, not after a probe period
        up = [w for w in self.registry.all() if w.healthy]
        await asyncio.gather(*(self._models.refresh(w) for w in up), *(self._prewarm(w) for w in up))
        await self._poller.poll_once()
        self._health.start()
        self._poller.start()
        await self.admission.start()

    async def stop(self) -> None:
        await self.admission.stop()
        await self._background.cancel_all()
        if self._poller is not None:
            await self._poller.stop()
        if self._health is not None:
            await self._health.stop()
        if self._models is not None:
            await self._models.stop()
        if self._upstream is not None:
            self._upstream.close()
        if self._http is not None:
            await self._http.close()

    async def add_worker(self, url: str, weight: float) -> Worker:
        try:
            worker = self.registry.add(url, weight)
        except DuplicateWorker as exc:
            raise HTTPError(409, str(exc), code="duplicate_worker") from exc
        if await self.health.probe(worker) and self._models is not None:
            await asyncio.gather(self._models.refresh(worker), self._prewarm(worker))
        return worker

    async def model_list(self) -> list[dict[str, Any]]:
        """The healthy workers' model cards, fetched when they came up, plus the aliases."""
        healthy = [w for w in self.registry.all() if w.healthy]
        if self._models is not None:
            await self._models.refresh_unknown(healthy)
        return model_list(healthy, self.aliases)

    async def remove_worker(self, worker: Worker) -> None:
        await self.registry.drain(worker, self.config.drain_timeout_s)
        self.health.forget(worker.id)
        if self._upstream is not None:
            if self.config.migration.stream_migration:  # what is left moves on (else it runs on)
                self._upstream.interrupt(worker.url, DRAIN)
            self._upstream.discard(worker.url)

    def _on_health_change(self, worker: Worker, healthy: bool) -> None:
        if not healthy and self._upstream is not None and self.config.migration.stream_migration:
            # A hung replica must cost its requests seconds: the waiting ones are retried and the
            # started ones migrated now, not when a first-byte timeout (300 s) fires.
            self._upstream.interrupt(worker.url, REPLICA_DOWN)
        if healthy:
            if self._models is not None:  # a restarted replica may serve another model now
                self._models.refresh_soon(worker)
            self._background.spawn(self._prewarm(worker))
            self.admission.on_capacity_freed()

    async def _prewarm(self, worker: Worker) -> None:
        if self._upstream is not None:
            await self._upstream.prewarm(worker.url, self.config.retry.prewarm_connections)

    def _on_probe(self, worker: Worker, ok: bool) -> None:
        self.metrics.health_checks[(worker.id, "ok" if ok else "fail")] += 1

    def _on_transition(self, worker_id: str, old: CircuitState, new: CircuitState) -> None:
        self.metrics.transitions[(worker_id, old.value, new.value)] += 1
        if new is not CircuitState.OPEN:
            self.admission.on_capacity_freed()

    def check_admin(self, request: web.Request) -> None:
        key = self.config.admin_key
        if key is None:
            return
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise HTTPError(401, "this endpoint needs Authorization: Bearer <admin key>",
                            code="invalid_admin_key")


def _gw(request: web.Request) -> Gateway:
    return request.app[GATEWAY_KEY]


async def _proxy(request: web.Request) -> web.StreamResponse:
    """The proxied routes on connections aiohttp serves (see front.py for the others)."""
    sink = AiohttpSink(request)
    await _gw(request).proxy.handle(request.path, request.headers, await request.read(), sink)
    assert sink.response is not None, "the proxy answers or raises"
    return sink.response


async def _health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def _readiness(request: web.Request) -> web.Response:
    if not _gw(request).registry.any_ready():
        raise HTTPError(503, "no healthy replica", code="no_healthy_worker")
    return _json({"status": "ready"})


async def _list_workers(request: web.Request) -> web.Response:
    return _json([w.to_json() for w in _gw(request).registry.all()])


async def _add_worker(request: web.Request) -> web.Response:
    gw = _gw(request)
    gw.check_admin(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"request body is not valid JSON: {exc}") from exc
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        raise HTTPError(400, "'url' is required: the replica's base URL, http://host:port", param="url")
    try:
        url = check_worker_url(url)
    except ValueError as exc:
        raise HTTPError(400, f"'url': {exc}", param="url") from exc
    weight = body.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        raise HTTPError(400, "'weight' must be a number > 0", param="weight")
    worker = await gw.add_worker(url, float(weight))
    return _json(worker.to_json(), status=201)


async def _remove_worker(request: web.Request) -> web.Response:
    gw = _gw(request)
    gw.check_admin(request)
    worker = gw.registry.get(request.match_info["worker_id"])
    if worker is None:
        raise HTTPError(404, f"no worker {request.match_info['worker_id']!r}", code="unknown_worker")
    await gw.remove_worker(worker)
    return web.Response(status=204)


async def _get_loads(request: web.Request) -> web.Response:
    return _json({"workers": [{k: v for k, v in w.to_json().items()
                               if k in ("id", "url", "in_flight", "running", "waiting", "kv_cache_usage",
                                        "load", "weight")}
                              for w in _gw(request).registry.all()]})


async def _metrics(request: web.Request) -> web.Response:
    gw = _gw(request)
    text = gw.metrics.render(gw.registry.all(), gw.policy.gauges()) + gw.admission.metrics_text()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _models(request: web.Request) -> web.Response:
    gw = _gw(request)
    gw.admission.authenticate(request.headers)
    return _json({"object": "list", "data": await gw.model_list()})


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    gw = app[GATEWAY_KEY]
    await gw.start()
    yield
    await gw.stop()


with warnings.catch_warnings():
    # aiohttp discourages subclassing Application; this one changes nothing but the protocol
    # factory a runner gets, so that connections start on the lean front (front.py).
    warnings.simplefilter("ignore", DeprecationWarning)

    class _GatewayApplication(web.Application):
        def _make_handler(self, *, loop: asyncio.AbstractEventLoop | None = None,
                          **kwargs: Any) -> web.Server:
            inner = super()._make_handler(loop=loop, **kwargs)
            # Runners call this after the startup hooks: the gateway (and its proxy) is started.
            return FrontServer(inner, self[GATEWAY_KEY].proxy.handle, self._client_max_size)


def build_app(config: GatewayConfig, *, clock: Callable[[], float] = time.monotonic) -> web.Application:
    """The gateway as an aiohttp app; start it with `dpserve.http_server.serve_app` or a runner.

    The two proxied routes are served by the lean front (front.py) on every connection that has
    not been handed to aiohttp; both cancel a handler when its client disconnects, which closes
    the upstream request.
    """
    app = _GatewayApplication(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES,
                              handler_args={"handler_cancellation": True})
    app[GATEWAY_KEY] = Gateway(config, clock)
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_post(CHAT_PATH, _proxy)
    app.router.add_post(COMPLETIONS_PATH, _proxy)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/readiness", _readiness)
    app.router.add_get("/workers", _list_workers)
    app.router.add_post("/workers", _add_worker)
    app.router.add_delete("/workers/{worker_id}", _remove_worker)
    app.router.add_get("/get_loads", _get_loads)
    app.router.add_get("/metrics", _metrics)
    return app
