"""HealthChecker: probes each replica's /health on an interval; thresholds move it down and up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from dpserve.aio import BackgroundTasks, cancel_and_wait
from dpserve.gateway.config import HealthConfig
from dpserve.gateway.worker import Worker
from dpserve.http_body import BodyTooLarge, read_capped
from dpserve.http_names import HEALTH_PATH

logger = logging.getLogger(__name__)


@dataclass
class _Streak:
    failures: int = 0
    successes: int = 0
    stalled_at: float | None = None  # a stream from it went silent then (clock); a probe clears it


@dataclass
class HealthChecker:
    """Background loop with start()/stop(); `probe(worker)` also runs on demand (worker added).

    A worker goes down after `health_failure_threshold` consecutive failed probes, or at once
    when a real request's connection is refused (`report_refused`); it comes back after
    `health_success_threshold` good probes. `on_change(worker, healthy)` hears every flip.
    In the periodic round a healthy worker whose load poll (`/metrics`) answered within the
    last interval counts as a good probe without a request: one poll per interval, not two; a
    poll from before a stalled or broken stream (`report_suspect`) vouches for nothing.
    """

    config: HealthConfig
    http: aiohttp.ClientSession
    workers: Callable[[], list[Worker]]
    on_change: Callable[[Worker, bool], None]
    on_probe: Callable[[Worker, bool], None] = lambda worker, ok: None
    clock: Callable[[], float] = time.monotonic  # the load poller's clock (PolledLoad.at)
    _streaks: dict[str, _Streak] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _extra_probes: BackgroundTasks = field(default_factory=BackgroundTasks)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="health-checker")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self._extra_probes.cancel_all()

    async def check_all(self) -> None:
        await asyncio.gather(*(self.probe(w) for w in self.workers()))

    async def probe(self, worker: Worker) -> bool:
        ok = await self._get_health(worker)
        self.on_probe(worker, ok)
        first = worker.id not in self._streaks  # a new worker that answers is up at once
        streak = self._streaks.setdefault(worker.id, _Streak())
        if ok:
            streak.failures, streak.successes, streak.stalled_at = 0, streak.successes + 1, None
            if not worker.healthy and (first or streak.successes >= self.config.health_success_threshold):
                self._set(worker, True)
        else:
            streak.failures, streak.successes = streak.failures + 1, 0
            if worker.healthy and streak.failures >= self.config.health_failure_threshold:
                self._set(worker, False)
        return ok

    def report_refused(self, worker: Worker) -> None:
        """A real request could not connect: the replica is down now, not at the next probe."""
        self._streaks[worker.id] = _Streak(failures=self.config.health_failure_threshold)
        if worker.healthy:
            self._set(worker, False)

    def report_suspect(self, worker: Worker) -> None:
        """A stream from this replica went silent or broke: probe it now, and let this probe's
        failure alone mark it down (the stall or break was the first strike), so a hung or dead
        replica stops getting requests and its other in-flight ones move within a probe timeout,
        not a probe period (an open breaker keeps requests, and so refused connections, away)."""
        streak = self._streaks.setdefault(worker.id, _Streak())
        streak.failures = max(streak.failures, self.config.health_failure_threshold - 1)
        streak.successes, streak.stalled_at = 0, self.clock()
        self._extra_probes.spawn(self._probe_quietly(worker))

    async def _probe_quietly(self, worker: Worker) -> None:
        await self.probe(worker)

    def forget(self, worker_id: str) -> None:
        self._streaks.pop(worker_id, None)

    def _set(self, worker: Worker, healthy: bool) -> None:
        worker.healthy = healthy
        logger.log(logging.INFO if healthy else logging.WARNING, "worker %s (%s) is %s", worker.id,
                   worker.url, "up" if healthy else "down")
        self.on_change(worker, healthy)

    async def _get_health(self, worker: Worker) -> bool:
        """A 200 within the timeout. The body is drained (so the connection is reused) but never
        decoded; an answer past http_body's cap is a failed probe, not one held in memory."""
        timeout = aiohttp.ClientTimeout(total=self.config.health_check_timeout_s)
        try:
            async with self.http.get(worker.url + HEALTH_PATH, timeout=timeout) as resp:
                await read_capped(resp)
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError, BodyTooLarge):
            return False

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_check_interval_s)
            await self.check_round()

    async def check_round(self) -> None:
        """One periodic round: probe every worker the load poller has not just heard from."""
        to_probe = []
        for w in self.workers():
            streak = self._streaks.setdefault(w.id, _Streak())
            if self._polled_recently(w, streak.stalled_at):
                self.on_probe(w, True)  # its /metrics answered: as good as a probe
                streak.failures = 0
            else:
                to_probe.append(w)
        await asyncio.gather(*(self.probe(w) for w in to_probe))

    def _polled_recently(self, worker: Worker, stalled_at: float | None) -> bool:
        """Healthy, and its /metrics answered within the last interval (and since any stall)."""
        polled = worker.polled
        return (worker.healthy and polled is not None
                and self.clock() - polled.at < self.config.health_check_interval_s
                and (stalled_at is None or polled.at > stalled_at))
