"""Gateway app factory: wires registry, policy, health, load polling, admission and the proxy to routes."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from dpserve.aio import BackgroundTasks, finish_all
from dpserve.config import ConfigError
from dpserve.errors import HTTPError
from dpserve.gateway.access import AccessPolicy
from dpserve.gateway.admission import Admission, build_admission
from dpserve.gateway.aliases import ModelAliases, parse_aliases
from dpserve.gateway.circuit_breaker import CircuitState
from dpserve.gateway.config import GatewayConfig
from dpserve.gateway.dashboard import Dashboard
from dpserve.gateway.gc_tuning import settle_after_startup
from dpserve.gateway.health import HealthChecker
from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint, parse_endpoint_spec
from dpserve.gateway.kv_events.feed import KvEventFeed
from dpserve.gateway.loads import LoadPoller
from dpserve.gateway.loop_guard import points_at
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.policies import build_policy
from dpserve.gateway.policies.base import Policy
from dpserve.gateway.proxy import Proxy
from dpserve.gateway.registry import DuplicateWorker, WorkerRegistry
from dpserve.gateway.retry import Broke
from dpserve.gateway.served_models import ModelDiscovery, model_list
from dpserve.gateway.server import GatewayServer
from dpserve.gateway.upstream import UpstreamPool
from dpserve.gateway.worker import ReplicaOrigin, Worker

# Connections for health probes, load polls and /v1/models (proxied requests use UpstreamPool).
_PROBE_CONNECTIONS = 256


class Gateway:
    """Everything one gateway process holds; built by `build_app`, started on app startup."""

    def __init__(self, config: GatewayConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.policy: Policy = build_policy(config.routing, clock=clock)
        self.metrics = GatewayMetrics(config.routing.policy)
        self.aliases = ModelAliases(parse_aliases(config.model_aliases))
        self.registry = WorkerRegistry(self.policy, config.breaker, clock, config.admission.worker_cap,
                                       on_transition=self._on_transition,
                                       slots_first=config.admission.ttft_slo_ms is not None)
        self.admission: Admission = build_admission(config.admission, self.registry, clock=clock)
        self.dashboard = Dashboard(self.registry, self.metrics, self.admission, clock=clock)
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
        self.kv_feed = KvEventFeed(self.policy) if self.policy.wants_kv_events else None
        self._listening: list[tuple[str, int]] = []  # this gateway's own (host, port): never a worker

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

    async def start(self, listening: Sequence[tuple[str, int]] = ()) -> None:
        """Start the background loops; `listening`: where this gateway accepts connections (a worker
        URL reaching one of them is refused: requests would loop through the gateway)."""
        self._listening = list(listening)
        for url in self.config.worker_urls:
            if await points_at(url, self._listening):
                raise ConfigError(f"--worker-urls: {url} is this gateway itself")
        # Health checks, load polls and /v1/models share one pooled aiohttp client; proxied
        # requests go through the leaner UpstreamPool (see upstream.py).
        connector = aiohttp.TCPConnector(limit=_PROBE_CONNECTIONS, limit_per_host=0, keepalive_timeout=60.0)
        key = self.config.replica_api_key
        self._http = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                           skip_auto_headers=("User-Agent",),
                                           headers={"Authorization": f"Bearer {key}"} if key else None)
        hc = self.config.health
        self._health = HealthChecker(hc, self._http, self.registry.all, self._on_health_change,
                                     self._on_probe)
        self._poller = LoadPoller(self.registry.all, self._http, hc.load_poll_interval_s,
                                  hc.health_check_timeout_s, on_scrape=self.dashboard.on_scrape)
        self._upstream = UpstreamPool(self.config.retry.connect_timeout_s)
        self._proxy = Proxy(self.config.retry, self.registry, self.policy, self._health, self.admission,
                            self.metrics, self._upstream, self.aliases, self.rng, self.clock,
                            self.config.migration, replica_api_key=self.config.replica_api_key)
        for i, url in enumerate(self.config.worker_urls):
            worker = self.registry.add(url, self.config.weight_of(i))
            if self.config.worker_kv_events:
                self._subscribe(worker, parse_endpoint_spec(self.config.worker_kv_events[i]))
        self._models = ModelDiscovery(self._http, hc.health_check_timeout_s,
                                      None if self.config.allow_heterogeneous else self.registry.all)
        await self._health.check_all()  # serve with the replicas that are up now, not after a probe period
        up = [w for w in self.registry.all() if w.healthy]
        await asyncio.gather(*(self._models.refresh(w) for w in up), *(self._prewarm(w) for w in up))
        await self._poller.poll_once()
        self._health.start()
        self._poller.start()
        self.dashboard.start()
        await self.admission.start()
        settle_after_startup()  # gc_tuning.py: start-up objects out of every later collection

    async def stop(self) -> None:
        """Every part stops, even after an earlier one failed or a second Ctrl-C cancelled this."""
        await finish_all([
            self.dashboard.stop, self.admission.stop,
            *([self.kv_feed.stop] if self.kv_feed is not None else []),
            self.policy.close,
            *([self._poller.stop] if self._poller is not None else []),
            *([self._health.stop] if self._health is not None else []),
            self._background.cancel_all,  # after the health checks, whose flips spawn prewarms
            *([self._models.stop] if self._models is not None else []),
            *([self._upstream.close] if self._upstream is not None else []),
            *([self._http.close] if self._http is not None else []),
        ])

    async def add_worker(self, url: str, weight: float, kv_events: KvEventsEndpoint | None = None,
                         origin: ReplicaOrigin = ReplicaOrigin()) -> Worker:
        if await points_at(url, self._listening):
            raise HTTPError(400, f"'url': {url} is this gateway itself; requests sent there would loop",
                            code="worker_is_gateway", param="url")
        try:
            worker = self.registry.add(url, weight, origin)
        except DuplicateWorker as exc:
            raise HTTPError(409, str(exc), code="duplicate_worker") from exc
        self._subscribe(worker, kv_events)
        if await self.health.probe(worker) and self._models is not None:
            await asyncio.gather(self._models.refresh(worker), self._prewarm(worker))
        return worker

    async def model_list(self) -> list[dict[str, Any]]:
        """The healthy workers' model cards, fetched when they came up, plus the aliases."""
        healthy = [w for w in self.registry.all() if w.healthy]
        if self._models is not None:
            await self._models.refresh_unknown(healthy)
        return model_list(healthy, self.aliases)

    def _subscribe(self, worker: Worker, kv_events: KvEventsEndpoint | None) -> None:
        """Note where the worker publishes its KV events (for /workers), and feed the policy those
        events (when it wants them and the worker publishes)."""
        worker.kv_events = kv_events
        if self.kv_feed is not None and kv_events is not None:
            self.kv_feed.add(worker.id, kv_events)

    async def remove_worker(self, worker: Worker) -> None:
        if self.kv_feed is not None:
            await self.kv_feed.remove(worker.id)
        await self.registry.drain(worker, self.config.drain_timeout_s)
        self.health.forget(worker.id)
        if self._upstream is not None:
            if self.config.migration.stream_migration:  # what is left moves on (else it runs on)
                self._upstream.interrupt(worker.url, Broke.DRAIN)
            self._upstream.discard(worker.url)

    def _on_health_change(self, worker: Worker, healthy: bool) -> None:
        self.dashboard.on_health_change()
        if not healthy and self._upstream is not None and self.config.migration.stream_migration:
            # A hung replica must cost its requests seconds: the waiting ones are retried and the
            # started ones migrated now, not when a first-byte timeout (300 s) fires.
            self._upstream.interrupt(worker.url, Broke.REPLICA_DOWN)
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


def build_app(config: GatewayConfig, *, clock: Callable[[], float] = time.monotonic,
              link_key: str | None = None) -> GatewayServer:
    """The gateway, ready to serve: `await server.start(sock)` ... `await server.stop(grace_s)`
    (`dpserve.http_server.serve_app` does both). `link_key`: an extra admin key for `dpserve serve`'s
    own POST/DELETE /workers (access.py), accepted whatever --admin-key says."""
    gateway = Gateway(config, clock)
    access = AccessPolicy(config.admin_key, link_key, config.admission.api_keys is not None,
                          gateway.admission.authenticate)
    return GatewayServer(gateway, access, config.limits)
