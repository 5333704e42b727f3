"""Co-launched replicas for `dpserve batch`: a thin adapter over launcher's ReplicaFleet.

Same placement, backends, restarts and watchdog as `dpserve serve`, minus the gateway: the batch
job talks to each replica directly. A restarted local replica keeps its reserved port, so the
job's health prober finds it again at the same URL; with --ray a restart may land on another node
and port, and the new URL is handed to the job's replica pool when the replica is ready there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from dpserve.config import ConfigError
from dpserve.launcher.config import LaunchConfig
from dpserve.launcher.fleet import ReplicaFleet
from dpserve.launcher.plan import build_plan
from dpserve.launcher.ports import PortAllocator
from dpserve.launcher.supervisor import ReplicaState, ReplicaSupervisor
from dpserve.offline.config import BatchConfig
from dpserve.offline.replicas import ReplicaPool

logger = logging.getLogger(__name__)

def default_log_dir() -> Path:
    from dpserve.model_store.resolver import cache_dir

    return cache_dir() / "logs" / f"batch-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


class LaunchedReplicas:
    """ReplicaSource that starts --dp-size replicas and supervises (restarts) them until stop()."""

    def __init__(self, config: BatchConfig) -> None:
        self._launch: LaunchConfig = config.launch
        self._ports = PortAllocator(self._launch.replica_host)
        self._http: aiohttp.ClientSession | None = None
        self._fleet: ReplicaFleet | None = None
        self._ready = asyncio.Event()
        self._ray: Any = None  # the RaySession with --ray
        self._pool: ReplicaPool | None = None

    async def start(self) -> list[str]:
        """Launch every replica; return all their URLs once the first one is healthy (with --ray,
        once every replica has been placed, so that every URL is known)."""
        runtime = None
        if self._launch.ray:
            from dpserve.launcher.on_ray.session import RaySession

            self._ray = RaySession.open(self._launch)  # blocking, before any request is in flight
            plan, runtime = self._ray.plan, self._ray.runtime
        else:
            plan = build_plan(self._launch, [self._ports.reserve() for _ in range(self._launch.dp_size)])
        log_dir = self._launch.log_dir or default_log_dir()
        logger.info("starting %s (logs in %s)", plan.describe(), log_dir)
        self._http = aiohttp.ClientSession()
        self._fleet = ReplicaFleet(self._launch, plan, log_dir, self._on_ready, self._on_down, runtime)
        await self._fleet.start(self._http)
        await self._wait_first_ready(self._fleet)
        if self._launch.ray:
            await self._wait_all_placed(self._fleet)
        return [sup.url for sup in self._fleet.supervisors]

    def bind(self, pool: ReplicaPool) -> None:
        """The job's pool, told when a replica comes back at another URL."""
        self._pool = pool

    async def _on_ready(self, sup: ReplicaSupervisor) -> None:
        logger.info("replica %s ready at %s", sup.replica_id, sup.url)
        if self._pool is not None:
            self._pool.set_url(sup.replica_id, sup.url)
        self._ready.set()

    @staticmethod
    async def _wait_all_placed(fleet: ReplicaFleet) -> None:
        while not all(s.instance is not None or s.state is ReplicaState.GAVE_UP for s in fleet.supervisors):
            await asyncio.sleep(0.05)

    async def _on_down(self, sup: ReplicaSupervisor) -> None:
        logger.warning("replica %s exited; its supervisor restarts it", sup.replica_id)

    async def _wait_first_ready(self, fleet: ReplicaFleet) -> None:
        waiters: list[asyncio.Future[Any]] = [asyncio.create_task(self._ready.wait()),
                                                 asyncio.create_task(fleet.ended())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if not self._ready.is_set():
            problems = "; ".join(f"{s.replica_id}: {s.last_problem}" for s in fleet.supervisors)
            raise ConfigError(f"no replica could be started: {problems}")

    async def stop(self) -> None:
        if self._fleet is not None:
            await self._fleet.stop()
        if self._http is not None:
            await self._http.close()
        if self._ray is not None:
            self._ray.close()
        self._ports.release_all()
