"""ServeService: the whole `dpserve serve` run — gateway in-process, replicas supervised, shutdown.

Order matters: the gateway starts first (empty) so each replica joins the moment its /health
answers; on Ctrl-C/SIGTERM the gateway stops first (draining in-flight requests, which still need
their replicas), then the replicas, then the watchdog that would have killed them had we died.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from dpserve.config import DEFAULT_HOST
from dpserve.http_server import serve_app
from dpserve.launcher.banner import usage_banner
from dpserve.launcher.config import LaunchConfig
from dpserve.launcher.gateway_link import GatewayLink
from dpserve.launcher.logs import ReplicaLog
from dpserve.launcher.plan import LaunchPlan
from dpserve.launcher.restart_policy import RestartPolicy
from dpserve.launcher.supervisor import ReplicaState, ReplicaSupervisor, SupervisionTimes
from dpserve.launcher.watchdog import Watchdog

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewaySite:
    """The in-process gateway: its app and where it listens."""

    app: web.Application
    host: str
    port: int
    drain_s: float  # in-flight requests get this long when the gateway stops
    admin_key: str | None = None  # for POST/DELETE /workers


class ServeService:
    """Runs until a signal (exit 0) or until every replica has been given up on (exit 1)."""

    def __init__(self, launch: LaunchConfig, plan: LaunchPlan, gateway: GatewaySite, log_dir: Path) -> None:
        self._launch = launch
        self._plan = plan
        self._gateway = gateway
        self._log_dir = log_dir
        self._stop = asyncio.Event()
        self._gateway_port: int | None = None
        self._announced = False
        self._link: GatewayLink | None = None
        self._watchdog = Watchdog(grace_s=min(launch.replica_grace_s, 5.0))
        self.supervisors: list[ReplicaSupervisor] = []

    def request_stop(self) -> None:
        """Same as SIGTERM: stop the gateway, then the replicas; run() then returns."""
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        await self._watchdog.start()
        async with aiohttp.ClientSession() as http:
            gateway_task = asyncio.create_task(self._serve_gateway())
            if not await self._gateway_listening(gateway_task):
                await self._watchdog.stop()
                return 1
            self._link = GatewayLink(self._base_url(), http, self._gateway.admin_key)
            self.supervisors = self._make_supervisors(http)
            tasks = [asyncio.create_task(s.run(i * self._launch.stagger_s))
                     for i, s in enumerate(self.supervisors)]
            all_gave_up = await self._wait_stop_or_all_done(tasks)
            await self._shutdown(gateway_task, self.supervisors, tasks)
        self._report(self.supervisors)
        return 1 if all_gave_up else 0

    async def _serve_gateway(self) -> None:
        site = self._gateway
        ready = self._on_gateway_ready
        await serve_app(site.app, site.host, site.port, shutdown_grace_s=site.drain_s,
                        on_ready=ready, stop_event=self._stop)

    def _on_gateway_ready(self, port: int) -> None:
        self._gateway_port = port

    async def _gateway_listening(self, gateway_task: asyncio.Task[None]) -> bool:
        """Wait until the gateway listens; False (reported) if it failed to start or we were stopped."""
        while self._gateway_port is None:
            if gateway_task.done():
                exc = gateway_task.exception()
                logger.error("the gateway could not start on %s:%d: %s", self._gateway.host,
                             self._gateway.port, exc)
                return False
            if self._stop.is_set():
                await gateway_task
                return False
            await asyncio.sleep(0.01)
        logger.info("gateway listening on %s; starting %s", self._base_url(), self._plan.describe())
        return True

    def _make_supervisors(self, http: aiohttp.ClientSession) -> list[ReplicaSupervisor]:
        cfg = self._launch
        times = SupervisionTimes(cfg.startup_timeout_s, cfg.ready_poll_interval_s, cfg.replica_grace_s)
        echo = sys.stderr.buffer if cfg.echo_replica_logs else None
        return [
            ReplicaSupervisor(
                spec, self._plan.backend,
                ReplicaLog(spec.replica_id, self._log_dir / f"{spec.replica_id}.log", echo),
                RestartPolicy(cfg.max_restarts, cfg.restart_window_s, cfg.restart_backoff_s,
                              cfg.restart_backoff_max_s),
                times, http, self._watchdog, self._replica_ready, self._replica_down)
            for spec in self._plan.replicas]

    async def _replica_ready(self, sup: ReplicaSupervisor) -> None:
        assert self._link is not None
        if await self._link.add(sup.replica_id, sup.spec.url) and not self._announced:
            self._announced = True
            print(usage_banner(self._base_url(), self._launch.model, str(self._log_dir)), flush=True)

    async def _replica_down(self, sup: ReplicaSupervisor) -> None:
        assert self._link is not None
        await self._link.remove(sup.replica_id)

    async def _wait_stop_or_all_done(self, tasks: list[asyncio.Task[None]]) -> bool:
        """True when every supervisor ended on its own (all replicas given up)."""
        stop_task = asyncio.create_task(self._stop.wait())
        all_done = asyncio.create_task(asyncio.wait(tasks))
        await asyncio.wait([stop_task, all_done], return_when=asyncio.FIRST_COMPLETED)
        gave_up = all_done.done() and not self._stop.is_set()
        all_done.cancel()
        if gave_up:
            logger.error("every replica has been given up on; stopping")
        stop_task.cancel()
        return gave_up

    async def _shutdown(self, gateway_task: asyncio.Task[None], supervisors: list[ReplicaSupervisor],
                        tasks: list[asyncio.Task[None]]) -> None:
        self._stop.set()
        await asyncio.gather(gateway_task, return_exceptions=True)
        if self._link is not None:
            self._link.close()
        logger.info("gateway stopped; stopping %d replica(s)", len(supervisors))
        await asyncio.gather(*(s.stop() for s in supervisors), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)
        for sup in supervisors:
            sup.log.close()
        await self._watchdog.stop()

    def _report(self, supervisors: list[ReplicaSupervisor]) -> None:
        for sup in supervisors:
            if sup.state is ReplicaState.GAVE_UP:
                logger.error("replica %s was given up on after %d restart(s): %s", sup.replica_id,
                             sup.restarts, sup.last_problem)

    def _client_host(self) -> str:
        host = self._gateway.host
        return DEFAULT_HOST if host in ("0.0.0.0", "::", "") else host

    def _base_url(self) -> str:
        return f"http://{self._client_host()}:{self._gateway_port}"
