"""ReplicaFleet: every co-launched replica of a plan, supervised, on one runtime (this host or Ray).

Shared by `dpserve serve` (which joins replicas to the gateway from the hooks) and anything else
that co-launches replicas. Local ports are reserved by the caller (they are in the plan); the
default runtime is this host, with the watchdog behind the replicas.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from dpserve.launcher.config import LaunchConfig
from dpserve.launcher.local_runtime import LocalRuntime
from dpserve.launcher.logs import ReplicaLog
from dpserve.launcher.plan import LaunchPlan
from dpserve.launcher.restart_policy import RestartPolicy
from dpserve.launcher.runtime import ReplicaRuntime
from dpserve.launcher.supervisor import ReplicaHook, ReplicaState, ReplicaSupervisor, SupervisionTimes


def supervision_times(cfg: LaunchConfig) -> SupervisionTimes:
    """The supervisor's timings; liveness (0 = off) is probed 4× per timeout, at most every 2 s."""
    liveness = cfg.liveness_timeout_s or None
    return SupervisionTimes(cfg.startup_timeout_s, cfg.ready_poll_interval_s, cfg.replica_grace_s,
                            liveness_timeout_s=liveness,
                            liveness_interval_s=min(2.0, liveness / 4) if liveness else 2.0)


class ReplicaFleet:
    """start() launches the replicas (staggered); stop() stops them all; `ended()` waits until
    every supervisor gave up."""

    def __init__(self, launch: LaunchConfig, plan: LaunchPlan, log_dir: Path,
                 on_ready: ReplicaHook, on_down: ReplicaHook, runtime: ReplicaRuntime | None = None) -> None:
        self._launch = launch
        self.plan = plan
        self.log_dir = log_dir
        self._on_ready = on_ready
        self._on_down = on_down
        self.runtime = runtime or LocalRuntime(watchdog_grace_s=min(launch.replica_grace_s, 5.0))
        self.supervisors: list[ReplicaSupervisor] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, http: aiohttp.ClientSession) -> None:
        """Open the runtime, then start one supervisor per replica, the i-th after i × --stagger-s."""
        await self.runtime.open()
        self.supervisors = [self._supervisor(i, http) for i in range(len(self.plan.replicas))]
        self._tasks = [asyncio.create_task(s.run(i * self._launch.stagger_s))
                       for i, s in enumerate(self.supervisors)]

    def _supervisor(self, index: int, http: aiohttp.ClientSession) -> ReplicaSupervisor:
        cfg, spec = self._launch, self.plan.replicas[index]
        echo = sys.stderr.buffer if cfg.echo_replica_logs else None
        log = ReplicaLog(spec.replica_id, self.log_dir / f"{spec.replica_id}.log", echo)
        policy = RestartPolicy(cfg.max_restarts, cfg.restart_window_s, cfg.restart_backoff_s,
                               cfg.restart_backoff_max_s)
        return ReplicaSupervisor(spec, self.plan.backend, log, policy, supervision_times(cfg), http,
                                 self.runtime, self._on_ready, self._on_down)

    async def ended(self) -> None:
        """Returns once every supervisor has ended on its own (all replicas given up)."""
        if self._tasks:
            await asyncio.wait(self._tasks)

    def given_up(self) -> list[ReplicaSupervisor]:
        return [s for s in self.supervisors if s.state is ReplicaState.GAVE_UP]

    async def stop(self) -> None:
        """Stop every replica (SIGTERM, grace, SIGKILL), then close the runtime."""
        await asyncio.gather(*(s.stop() for s in self.supervisors), return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sup in self.supervisors:
            sup.log.close()
        await self.runtime.close()
