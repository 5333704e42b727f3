"""Replicas as processes on this host: own process group, tied to our life, watched by the watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess

from dpserve.aio import wait_for
from dpserve.launcher.backends import Backend, ReplicaSpec
from dpserve.launcher.logs import ReplicaLog
from dpserve.launcher.port_owner import group_listens_on
from dpserve.launcher.process import spawn, stop_group
from dpserve.launcher.runtime import ReplicaRuntime, RunningReplica, StartError
from dpserve.launcher.watchdog import Watchdog


class LocalReplica(RunningReplica):
    """A replica process group on this host; its output pumped into its log."""

    def __init__(self, spec: ReplicaSpec, argv: list[str], env: dict[str, str],
                 proc: asyncio.subprocess.Process, log: ReplicaLog, watchdog: Watchdog) -> None:
        self.spec, self.argv, self.env = spec, argv, env
        self.proc, self.pid = proc, proc.pid
        self._watchdog = watchdog
        assert proc.stdout is not None
        self._pump = asyncio.create_task(log.pump(proc.stdout))
        watchdog.track(proc.pid)

    def describe(self) -> str:
        return f"pid {self.proc.pid}"

    @property
    def ended(self) -> bool:
        return self.proc.returncode is not None

    def outcome(self) -> str:
        return describe_exit_code(self.proc.returncode)

    async def wait(self) -> None:
        await self.proc.wait()

    async def serves_its_port(self) -> bool | None:
        return group_listens_on(self.proc.pid, self.spec.port)

    async def stop(self, grace_s: float) -> None:
        """Stop the group, then make sure its output is drained (the pump ends at EOF)."""
        await stop_group(self.proc, grace_s)
        self._watchdog.untrack(self.proc.pid)
        with contextlib.suppress(TimeoutError):
            await wait_for(asyncio.shield(self._pump), timeout=5.0)
        if not self._pump.done():
            self._pump.cancel()


class LocalRuntime(ReplicaRuntime):
    """Spawns each replica here; the watchdog kills their groups if we die, even by SIGKILL."""

    def __init__(self, watchdog_grace_s: float) -> None:
        self._watchdog = Watchdog(grace_s=watchdog_grace_s)

    async def open(self) -> None:
        await self._watchdog.start()

    async def close(self) -> None:
        await self._watchdog.stop()

    async def start(self, spec: ReplicaSpec, backend: Backend, log: ReplicaLog) -> RunningReplica:
        argv, env = backend.command(spec), backend.env(spec)
        try:
            proc = await spawn(argv, {**os.environ, **env}, spec.placement.cpu_cores)
        except (OSError, subprocess.SubprocessError) as exc:
            raise StartError(f"could not start {spec.shown(argv)}: {exc}") from exc
        return LocalReplica(spec, argv, env, proc, log, self._watchdog)


def describe_exit_code(code: int | None) -> str:
    if code is None:
        return ""
    return f"signal {-code}" if code < 0 else f"code {code}"
