"""Co-launched replicas for `dpserve batch`: a thin adapter over dpserve.launcher's supervisors.

Same placement, backends, restarts and watchdog as `dpserve serve`, minus the gateway: the batch
job talks to each replica directly. A restarted replica keeps its reserved port, so the job's
health prober finds it again at the same URL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from dpserve.config import ConfigError
from dpserve.launcher.config import LaunchConfig
from dpserve.launcher.logs import ReplicaLog
from dpserve.launcher.plan import LaunchPlan, build_plan
from dpserve.launcher.ports import PortAllocator
from dpserve.launcher.restart_policy import RestartPolicy
from dpserve.launcher.supervisor import ReplicaSupervisor, SupervisionTimes
from dpserve.launcher.watchdog import Watchdog
from dpserve.offline.config import BatchConfig

logger = logging.getLogger(__name__)

def default_log_dir() -> Path:
    from dpserve.model_store.resolver import cache_dir

    return cache_dir() / "logs" / f"batch-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


class LaunchedReplicas:
    """ReplicaSource that starts --dp-size replicas and supervises (restarts) them until stop()."""

    def __init__(self, config: BatchConfig) -> None:
        self._launch: LaunchConfig = config.launch
        self._ports = PortAllocator(self._launch.replica_host)
        self._watchdog = Watchdog(grace_s=min(self._launch.replica_grace_s, 5.0))
        self._http: aiohttp.ClientSession | None = None
        self._supervisors: list[ReplicaSupervisor] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()

    async def start(self) -> list[str]:
        """Launch every replica; return all their URLs once the first one is healthy."""
        plan = build_plan(self._launch, [self._ports.reserve() for _ in range(self._launch.dp_size)])
        log_dir = self._launch.log_dir or default_log_dir()
        logger.info("starting %s (logs in %s)", plan.describe(), log_dir)
        await self._watchdog.start()
        self._http = aiohttp.ClientSession()
        self._supervisors = self._make_supervisors(plan, log_dir, self._http)
        self._tasks = [asyncio.create_task(s.run(i * self._launch.stagger_s))
                       for i, s in enumerate(self._supervisors)]
        await self._wait_first_ready()
        return [spec.url for spec in plan.replicas]

    def _make_supervisors(self, plan: LaunchPlan, log_dir: Path,
                          http: aiohttp.ClientSession) -> list[ReplicaSupervisor]:
        cfg = self._launch
        times = SupervisionTimes(cfg.startup_timeout_s, cfg.ready_poll_interval_s, cfg.replica_grace_s)
        echo = sys.stderr.buffer if cfg.echo_replica_logs else None
        logs = {spec.replica_id: ReplicaLog(spec.replica_id, log_dir / f"{spec.replica_id}.log", echo)
                for spec in plan.replicas}
        return [ReplicaSupervisor(spec, plan.backend, logs[spec.replica_id], self._restart_policy(), times,
                                  http, self._watchdog, self._on_ready, self._on_down)
                for spec in plan.replicas]

    def _restart_policy(self) -> RestartPolicy:
        cfg = self._launch
        return RestartPolicy(cfg.max_restarts, cfg.restart_window_s, cfg.restart_backoff_s,
                             cfg.restart_backoff_max_s)

    async def _on_ready(self, sup: ReplicaSupervisor) -> None:
        logger.info("replica %s ready at %s", sup.replica_id, sup.spec.url)
        self._ready.set()

    async def _on_down(self, sup: ReplicaSupervisor) -> None:
        logger.warning("replica %s exited; its supervisor restarts it", sup.replica_id)

    async def _wait_first_ready(self) -> None:
        waiters: list[asyncio.Future[Any]] = [asyncio.create_task(self._ready.wait()),
                                                 asyncio.gather(*self._tasks, return_exceptions=True)]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        waiters[0].cancel()
        if not self._ready.is_set():
            problems = "; ".join(f"{s.replica_id}: {s.last_problem}" for s in self._supervisors)
            raise ConfigError(f"no replica could be started: {problems}")

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self._supervisors), return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sup in self._supervisors:
            sup.log.close()
        await self._watchdog.stop()
        if self._http is not None:
            await self._http.close()
        self._ports.release_all()
