"""ReplicaSupervisor: runs one replica for the life of the service — start, wait for /health,
announce it, notice its exit, restart it with backoff, give up after too many restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

import aiohttp

from dpserve.aio import wait_for
from dpserve.launcher.backends import Backend, ReplicaSpec
from dpserve.launcher.logs import ReplicaLog
from dpserve.launcher.restart_policy import RestartPolicy
from dpserve.launcher.runtime import ReplicaRuntime, RunningReplica, StartError

logger = logging.getLogger(__name__)

ReplicaHook = Callable[["ReplicaSupervisor"], Awaitable[None]]


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
                 times: SupervisionTimes, http: aiohttp.ClientSession, runtime: ReplicaRuntime,
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
        self._runtime = runtime
        self._on_ready = on_ready
        self._on_down = on_down
        self.instance: RunningReplica | None = None  # the running instance, if any
        self._stopping = asyncio.Event()

    @property
    def replica_id(self) -> str:
        return self.spec.replica_id

    async def run(self, start_delay_s: float = 0.0) -> None:
        """Supervise until stop() or until given up; never raises for replica failures."""
        if await self._sleep_unless_stopped(start_delay_s):
            return
        while not self._stopping.is_set():
            outcome = await self._run_once()
            if self._stopping.is_set():
                break
            delay = self._policy.on_exit(time.monotonic())
            if delay is None:
                self._give_up(outcome)
                return
            self.restarts += 1
            self.state = ReplicaState.BACKING_OFF
            logger.warning("replica %s exited (%s); restart %d in %.1fs", self.replica_id,
                           outcome, self.restarts, delay)
            self.log.note(f"exited ({outcome}); restarting in {delay:.1f}s")
            if await self._sleep_unless_stopped(delay):
                break
        self.state = ReplicaState.STOPPED

    async def _run_once(self) -> str:
        """Start the replica, announce it once healthy, wait for its end; how it ended."""
        self.state = ReplicaState.STARTING
        try:
            instance = await self._start_unless_stopped()
        except StartError as exc:
            self.last_problem = str(exc)
            logger.error("replica %s %s", self.replica_id, self.last_problem)
            self.log.note(self.last_problem)
            return "not started"
        if instance is None:
            return "stopped while starting"
        self.instance = instance
        self.pid = instance.pid
        env_text = " ".join(f"{k}={v}" for k, v in instance.env.items())
        self.log.note(f"started {instance.describe()}: {env_text} {instance.spec.shown(instance.argv)}")
        logger.debug("replica %s started: %s", self.replica_id, instance.describe())
        try:
            if await self._wait_healthy(instance):
                self.state = ReplicaState.READY
                await self._on_ready(self)
                await self._watch_alive(instance)
                if not self._stopping.is_set():
                    await self._on_down(self)
            return instance.outcome() or "stopped"
        finally:
            await instance.stop(self._times.grace_s)
            self.instance = None

    async def _start_unless_stopped(self) -> RunningReplica | None:
        """The runtime's start, abandoned (cancelled: the runtime takes back what it took) if stop()
        comes first — on Ray a start may wait up to --startup-timeout-s for room in the cluster."""
        start = asyncio.ensure_future(self._runtime.start(self.spec, self.backend, self.log))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([start, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not start.done():
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
            return None
        return start.result()

    async def _wait_healthy(self, instance: RunningReplica) -> bool:
        """Poll /health until it answers 200 (True), or the replica ends / we stop / time runs out."""
        deadline = time.monotonic() + self._times.startup_timeout_s
        url = instance.url + self.backend.health_path
        warned = False
        while not instance.ended and not self._stopping.is_set():
            if await self._probe(url):
                if await instance.serves_its_port() is not False:
                    return True
                if not warned:
                    warned = True
                    logger.warning("replica %s: %s answers, but not from the replica's processes "
                                   "(another program took port %d?); waiting", self.replica_id, url,
                                   instance.spec.port)
            if time.monotonic() >= deadline:
                self._report_startup_timeout()
                await instance.stop(self._times.grace_s)
                return False
            # Never sleep past the deadline: the next probe must come before the timeout is judged.
            pause_s = min(self._times.ready_poll_interval_s, max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await wait_for(instance.wait(), timeout=pause_s)
        return False

    async def _watch_alive(self, instance: RunningReplica) -> None:
        """Until the replica ends: probe /health; kill it once it has not answered for
        liveness_timeout_s (a wedged replica never exits by itself)."""
        limit_s = self._times.liveness_timeout_s
        if limit_s is None:
            await self._wait_ended_or_stopping(instance, None)
            return
        url = instance.url + self.backend.health_path
        last_ok = time.monotonic()
        while not instance.ended and not self._stopping.is_set():
            await self._wait_ended_or_stopping(instance, self._times.liveness_interval_s)
            if instance.ended or self._stopping.is_set():
                break
            if await self._probe(url):
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok > limit_s:
                self.last_problem = f"/health unanswered for {limit_s:g}s while serving; killed"
                logger.error("replica %s: %s", self.replica_id, self.last_problem)
                self.log.note(self.last_problem)
                await instance.stop(self._times.grace_s)
        await self._wait_ended_or_stopping(instance, None)

    async def _wait_ended_or_stopping(self, instance: RunningReplica, timeout_s: float | None) -> None:
        """Until the instance ends, stop() is called, or timeout_s passes (None: no limit)."""
        ended = asyncio.ensure_future(instance.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([ended, stopping], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            stopping.cancel()

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

    def _give_up(self, outcome: str) -> None:
        self.state = ReplicaState.GAVE_UP
        reason = (f"exited ({outcome}) {self._policy.max_restarts + 1} times within "
                  f"{self._policy.window_s:g}s; giving up (log: {self.log.path})")
        self.last_problem = self.last_problem or reason
        logger.error("replica %s %s; last lines:\n%s", self.replica_id, reason, self.log.tail())
        self.log.note(reason)

    async def _sleep_unless_stopped(self, delay_s: float) -> bool:
        """Sleep delay_s; True if stop() came first."""
        if delay_s <= 0:
            return self._stopping.is_set()
        with contextlib.suppress(TimeoutError):
            await wait_for(self._stopping.wait(), timeout=delay_s)
        return self._stopping.is_set()

    @property
    def current_spec(self) -> ReplicaSpec:
        """The running instance's spec (on Ray its node, port and GPUs are known once placed),
        else the planned one."""
        return self.instance.spec if self.instance is not None else self.spec

    @property
    def url(self) -> str:
        return self.current_spec.url

    async def stop(self) -> None:
        """Stop supervising and stop the running instance (SIGTERM, grace, SIGKILL)."""
        self._stopping.set()
        instance = self.instance
        if instance is not None:
            await instance.stop(self._times.grace_s)
