"""ReplicaSupervisor: runs one replica for the life of the service — start, wait for /health,
announce it, notice its exit, restart it with backoff, give up after too many restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

import aiohttp

from dpserve.launcher.backends import Backend, ReplicaSpec
from dpserve.launcher.logs import ReplicaLog
from dpserve.launcher.port_owner import group_listens_on
from dpserve.launcher.process import spawn, stop_group
from dpserve.launcher.restart_policy import RestartPolicy
from dpserve.launcher.watchdog import Watchdog

logger = logging.getLogger(__name__)

ReplicaHook = Callable[["ReplicaSupervisor"], Awaitable[None]]

_SPAWN_FAILED = 127  # the shell's "command not found"


class ReplicaState(Enum):
    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    BACKING_OFF = "backing_off"
    GAVE_UP = "gave_up"
    STOPPED = "stopped"


@dataclass(frozen=True)
class SupervisionTimes:
    startup_timeout_s: float
    ready_poll_interval_s: float
    grace_s: float
    #: A ready replica whose /health has not answered 200 for this long is killed (and restarted).
    liveness_timeout_s: float | None = None
    liveness_interval_s: float = 2.0


class ReplicaSupervisor:
    """One replica. `on_ready` runs each time it becomes healthy, `on_down` each time a healthy
    instance goes away (so the gateway can add and remove it); both are awaited in order."""

    def __init__(self, spec: ReplicaSpec, backend: Backend, log: ReplicaLog, policy: RestartPolicy,
                 times: SupervisionTimes, http: aiohttp.ClientSession, watchdog: Watchdog,
                 on_ready: ReplicaHook, on_down: ReplicaHook) -> None:
        self.spec = spec
        self.backend = backend
        self.log = log
        self.state = ReplicaState.PENDING
        self.restarts = 0
        self.pid: int | None = None
        self.last_problem: str | None = None
        self._policy = policy
        self._times = times
        self._http = http
        self._watchdog = watchdog
        self._on_ready = on_ready
        self._on_down = on_down
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()

    @property
    def replica_id(self) -> str:
        return self.spec.replica_id

    async def run(self, start_delay_s: float = 0.0) -> None:
        """Supervise until stop() or until given up; never raises for replica failures."""
        if await self._sleep_unless_stopped(start_delay_s):
            return
        while not self._stopping.is_set():
            exit_code = await self._run_once()
            if self._stopping.is_set():
                break
            delay = self._policy.on_exit(time.monotonic())
            if delay is None:
                self._give_up(exit_code)
                return
            self.restarts += 1
            self.state = ReplicaState.BACKING_OFF
            logger.warning("replica %s exited (%s); restart %d in %.1fs", self.replica_id,
                           _describe_exit(exit_code), self.restarts, delay)
            self.log.note(f"exited ({_describe_exit(exit_code)}); restarting in {delay:.1f}s")
            if await self._sleep_unless_stopped(delay):
                break
        self.state = ReplicaState.STOPPED

    async def _run_once(self) -> int | None:
        """Start the replica, announce it once healthy, return its exit code (None: we stopped it)."""
        self.state = ReplicaState.STARTING
        argv, env = self.backend.command(self.spec), self.backend.env(self.spec)
        try:
            proc = await spawn(argv, {**os.environ, **env}, self.spec.placement.cpu_cores)
        except (OSError, subprocess.SubprocessError) as exc:
            self.last_problem = f"could not start {shlex.join(argv)}: {exc}"
            logger.error("replica %s %s", self.replica_id, self.last_problem)
            self.log.note(self.last_problem)
            return _SPAWN_FAILED
        self._proc, self.pid = proc, proc.pid
        self.log.note(f"started pid {proc.pid}: {' '.join(f'{k}={v}' for k, v in env.items())} "
                      f"{shlex.join(argv)}")
        logger.debug("replica %s started as pid %d", self.replica_id, proc.pid)
        self._watchdog.track(proc.pid)
        assert proc.stdout is not None
        pump = asyncio.create_task(self.log.pump(proc.stdout))
        try:
            if await self._wait_healthy(proc):
                self.state = ReplicaState.READY
                await self._on_ready(self)
                await self._watch_alive(proc)
                if not self._stopping.is_set():
                    await self._on_down(self)
            return proc.returncode
        finally:
            await self._reap(proc, pump)

    async def _wait_healthy(self, proc: asyncio.subprocess.Process) -> bool:
        """Poll /health until it answers 200 (True), or the process exits / we stop / time runs out."""
        deadline = time.monotonic() + self._times.startup_timeout_s
        url = self.spec.url + self.backend.health_path
        warned = False
        while proc.returncode is None and not self._stopping.is_set():
            if await self._probe(url):
                if group_listens_on(proc.pid, self.spec.port) is not False:
                    return True
                if not warned:
                    warned = True
                    logger.warning("replica %s: %s answers, but not from the replica's processes "
                                   "(another program took port %d?); waiting", self.replica_id, url,
                                   self.spec.port)
            if time.monotonic() >= deadline:
                self._report_startup_timeout()
                await stop_group(proc, self._times.grace_s)
                return False
            # Never sleep past the deadline: the next probe must come before the timeout is judged.
            pause_s = min(self._times.ready_poll_interval_s, max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=pause_s)
        return False

    async def _watch_alive(self, proc: asyncio.subprocess.Process) -> None:
        """Until the process exits: probe /health; kill it once it has not answered for
        liveness_timeout_s (a wedged replica never exits by itself)."""
        limit_s = self._times.liveness_timeout_s
        if limit_s is None:
            await proc.wait()
            return
        url = self.spec.url + self.backend.health_path
        last_ok = time.monotonic()
        while proc.returncode is None and not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=self._times.liveness_interval_s)
            if proc.returncode is not None or self._stopping.is_set():
                break
            if await self._probe(url):
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok > limit_s:
                self.last_problem = f"/health unanswered for {limit_s:g}s while serving; killed"
                logger.error("replica %s: %s", self.replica_id, self.last_problem)
                self.log.note(self.last_problem)
                await stop_group(proc, self._times.grace_s)
        await proc.wait()

    async def _probe(self, url: str) -> bool:
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    def _report_startup_timeout(self) -> None:
        self.last_problem = (f"not healthy after {self._times.startup_timeout_s:g}s "
                             f"(log: {self.log.path}); last lines:\n{self.log.tail()}")
        logger.error("replica %s %s", self.replica_id, self.last_problem)
        self.log.note(f"not healthy after {self._times.startup_timeout_s:g}s; killing it")

    async def _reap(self, proc: asyncio.subprocess.Process, pump: asyncio.Task[None]) -> None:
        """Make sure the process and its whole group are gone and its output is drained."""
        await stop_group(proc, self._times.grace_s)
        self._watchdog.untrack(proc.pid)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pump, timeout=5.0)
        if not pump.done():
            pump.cancel()
        self._proc = None

    def _give_up(self, exit_code: int | None) -> None:
        self.state = ReplicaState.GAVE_UP
        reason = (f"exited ({_describe_exit(exit_code)}) {self._policy.max_restarts + 1} times within "
                  f"{self._policy.window_s:g}s; giving up (log: {self.log.path})")
        self.last_problem = self.last_problem or reason
        logger.error("replica %s %s; last lines:\n%s", self.replica_id, reason, self.log.tail())
        self.log.note(reason)

    async def _sleep_unless_stopped(self, delay_s: float) -> bool:
        """Sleep delay_s; True if stop() came first."""
        if delay_s <= 0:
            return self._stopping.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)
        return self._stopping.is_set()

    async def stop(self) -> None:
        """Stop supervising and stop the replica's process group (SIGTERM, grace, SIGKILL)."""
        self._stopping.set()
        proc = self._proc
        if proc is not None:
            await stop_group(proc, self._times.grace_s)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped"
    return f"signal {-code}" if code < 0 else f"code {code}"
