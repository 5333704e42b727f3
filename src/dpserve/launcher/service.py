"""ServeService: the whole `dpserve serve` run — gateway in-process, replicas supervised, shutdown.

Order matters: the gateway starts first (empty) so each replica joins the moment its /health
answers; on Ctrl-C/SIGTERM the gateway stops first (draining in-flight requests, which still need
their replicas), then the replicas, then the watchdog that would have killed them had we died.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from dpserve.config import DEFAULT_HOST
from dpserve.http_server import Server, serve_app
from dpserve.launcher.banner import usage_banner
from dpserve.launcher.config import LaunchConfig
from dpserve.launcher.fleet import ReplicaFleet
from dpserve.launcher.gateway_link import GatewayLink
from dpserve.launcher.plan import LaunchPlan
from dpserve.launcher.prometheus_config import ScrapeConfigFile
from dpserve.launcher.runtime import ReplicaRuntime
from dpserve.launcher.supervisor import ReplicaSupervisor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewaySite:
    """The in-process gateway: its app (the gateway's server, or any aiohttp app in tests) and where
    it listens."""

    app: web.Application | Server
    host: str
    port: int
    drain_s: float  # in-flight requests get this long when the gateway stops
    admin_key: str | None = None  # the launcher's key for POST/DELETE /workers


class ServeService:
    """Runs until a signal (exit 0) or until every replica has been given up on (exit 1)."""

    def __init__(self, launch: LaunchConfig, plan: LaunchPlan, gateway: GatewaySite, log_dir: Path,
                 runtime: ReplicaRuntime | None = None) -> None:
        self._launch = launch
        self._plan = plan
        self._gateway = gateway
        self._stop = asyncio.Event()
        self._gateway_port: int | None = None
        self._listening = asyncio.Event()
        self._gateway_task: asyncio.Task[None] | None = None
        self._announced = False
        self._link: GatewayLink | None = None
        self._scrape: ScrapeConfigFile | None = None
        self.fleet = ReplicaFleet(launch, plan, log_dir, self._replica_ready, self._replica_down, runtime)

    @property
    def supervisors(self) -> list[ReplicaSupervisor]:
        return self.fleet.supervisors

    def request_stop(self) -> None:
        """Same as SIGTERM: stop the gateway, then the replicas; run() then returns."""
        self._stop.set()

    async def run(self) -> int:
        self._install_signal_handlers()
        async with aiohttp.ClientSession() as http:
            gateway_task = asyncio.create_task(self._serve_gateway())
            self._gateway_task = gateway_task
            if not await self._gateway_listening(gateway_task):
                return 1
            self._link = GatewayLink(self._base_url(), http, self._gateway.admin_key)
            self._write_prometheus_config()
            await self.fleet.start(http)
            all_gave_up = await self._wait_stop_or_all_ended()
            await self._shutdown(gateway_task)
        for sup in self.fleet.given_up():
            logger.error("replica %s was given up on after %d restart(s): %s", sup.replica_id,
                         sup.restarts, sup.last_problem)
        return 1 if all_gave_up else 0

    async def _serve_gateway(self) -> None:
        site = self._gateway
        await serve_app(site.app, site.host, site.port, shutdown_grace_s=site.drain_s,
                        on_ready=self._on_gateway_ready, stop_event=self._stop)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        """First Ctrl-C/SIGTERM: orderly stop with drain. Second: skip the drain."""
        if not self._stop.is_set():
            self._stop.set()
        elif self._gateway_task is not None and not self._gateway_task.done():
            logger.warning("second signal: not waiting for in-flight requests")
            self._gateway_task.cancel()

    def _on_gateway_ready(self, port: int) -> None:
        self._gateway_port = port
        self._listening.set()
        self._install_signal_handlers()  # serve_app installed its own; ours also handle a second signal

    async def _gateway_listening(self, gateway_task: asyncio.Task[None]) -> bool:
        """Wait until the gateway listens; False (reported) if it failed to start or we were stopped."""
        listening = asyncio.create_task(self._listening.wait())
        stopped = asyncio.create_task(self._stop.wait())
        await asyncio.wait([listening, stopped, gateway_task], return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        stopped.cancel()
        if not self._listening.is_set():
            if gateway_task.done() and gateway_task.exception() is not None:
                logger.error("the gateway could not start on %s:%d: %s", self._gateway.host,
                             self._gateway.port, gateway_task.exception())
            self._stop.set()
            await asyncio.gather(gateway_task, return_exceptions=True)
            return False
        logger.info("gateway listening on %s; starting %s", self._base_url(), self._plan.describe())
        return True

    async def _replica_ready(self, sup: ReplicaSupervisor) -> None:
        assert self._link is not None
        spec = sup.current_spec
        added = await self._link.add(sup.replica_id, spec.url, spec.kv_events, sup.restarts)
        if self._scrape is not None:  # on Ray it may be on another node and port than before
            self._scrape.set_replica(sup.replica_id, _target(spec.host, spec.port))
        if added and not self._announced:
            self._announced = True
            print(usage_banner(self._base_url(), self._launch.model, str(self.fleet.log_dir),
                               self._plan.layout()), flush=True)

    async def _replica_down(self, sup: ReplicaSupervisor) -> None:
        assert self._link is not None
        await self._link.remove(sup.replica_id)

    async def _wait_stop_or_all_ended(self) -> bool:
        """True when every supervisor ended on its own (all replicas given up)."""
        stop_task = asyncio.create_task(self._stop.wait())
        ended_task = asyncio.create_task(self.fleet.ended())
        await asyncio.wait([stop_task, ended_task], return_when=asyncio.FIRST_COMPLETED)
        gave_up = ended_task.done() and not self._stop.is_set()
        if gave_up:
            logger.error("every replica has been given up on; stopping")
        stop_task.cancel()
        ended_task.cancel()
        return gave_up

    async def _shutdown(self, gateway_task: asyncio.Task[None]) -> None:
        self._stop.set()
        await asyncio.gather(gateway_task, return_exceptions=True)
        if self._link is not None:
            self._link.close()
        logger.info("gateway stopped; stopping %d replica(s)", len(self.fleet.supervisors))
        await self.fleet.stop()

    def _write_prometheus_config(self) -> None:
        """At start, with every replica address the plan knows (on Ray: none yet)."""
        path = self._launch.write_prometheus_config
        if path is None:
            return
        known = self._plan.addresses_known
        replicas = [(s.replica_id, _target(s.host, s.port) if known else None) for s in self._plan.replicas]
        self._scrape = ScrapeConfigFile(path, _target(self._gateway.host, self._gateway_port or 0),
                                        replicas, self._gateway.admin_key)
        self._scrape.write()

    def _base_url(self) -> str:
        return f"http://{_client_host(self._gateway.host)}:{self._gateway_port}"


def _client_host(host: str) -> str:
    """Where a client on this host reaches a server listening on `host` (a wildcard → loopback)."""
    return DEFAULT_HOST if host in ("0.0.0.0", "::", "") else host


def _target(host: str, port: int) -> str:
    """host:port as Prometheus wants a target (IPv6 in brackets)."""
    host = _client_host(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
