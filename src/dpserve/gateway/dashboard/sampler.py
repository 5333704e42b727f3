"""DashboardSampler (start/stop): once a second, the fleet as the gateway sees it → a Sample and the history.

Replica data comes from the load poller's scrapes (handed over with `on_scrape`, parsed here at
most once per tick), gateway data from its counters; nothing is fetched for the dashboard. A
replica the poller no longer scrapes (idle after its one final scrape, or down) is held at its
last scrape up to now, so its rates fall to 0 and its last-minute windows empty on time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from dpserve import diagnosis as dx
from dpserve.aio import cancel_and_wait, wait_for
from dpserve.gateway.admission import Admission
from dpserve.gateway.dashboard import gateway_totals as gt
from dpserve.gateway.dashboard.replica_history import KEPT_SERIES, MINUTE_S, RATE_WINDOW_S, ReplicaHistory
from dpserve.gateway.dashboard.ring import SeriesRing
from dpserve.gateway.dashboard.sample import (
    ReplicaSample,
    Sample,
    fleet_of,
    label_workers,
    ring_row,
    tenants_of,
)
from dpserve.gateway.dashboard.timed_window import TimedWindow
from dpserve.gateway.loads import PolledWorker, is_polled
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.registry import WorkerRegistry
from dpserve.gateway.worker import Worker
from dpserve.prometheus_text import parse_exposition

logger = logging.getLogger(__name__)

INTERVAL_S = 1.0
HISTORY_S = 15 * 60.0
# The bottleneck verdict is over this window: long enough that one burst is not a verdict.
DIAGNOSIS_WINDOW_S = 15.0
# A replica that left the registry (a launcher restarting it) stays listed, down, this long.
REMOVED_VISIBLE_S = 60.0
# Bounds what a stalled clock or a burst of ticks can hold (one entry per tick at most).
_MAX_WINDOW_ITEMS = 128


class DashboardSampler:
    """Owns the dashboard's state: the latest Sample, the history ring, each replica's recent scrapes."""

    def __init__(self, registry: WorkerRegistry, metrics: GatewayMetrics, admission: Admission, *,
                 slo: dx.Slo = dx.Slo(), interval_s: float = INTERVAL_S, history_s: float = HISTORY_S,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._registry = registry
        self._metrics = metrics
        self._admission = admission
        self._slo = slo
        self.interval_s = interval_s
        self._clock = clock
        self._wall_clock = wall_clock
        self.ring = SeriesRing(max(1, math.ceil(history_s / interval_s)))
        self.latest: Sample | None = None
        self._scraped: dict[str, tuple[float, str]] = {}  # worker id → newest scrape not read yet
        self._histories: dict[str, ReplicaHistory] = {}  # by label
        self._gone: dict[str, float] = {}  # label → when it left the registry
        self._totals: TimedWindow[gt.Totals] = TimedWindow(MINUTE_S, _MAX_WINDOW_ITEMS)
        self._next_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()

    def on_scrape(self, worker: PolledWorker, text: str) -> None:
        """The load poller read a replica's /metrics (kept as text; parsed at the next tick)."""
        self._scraped[worker.id] = (self._clock(), text)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dashboard-sampler")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def next_sample_in_s(self) -> float:
        """Seconds until the next tick (lets the page poll just after it)."""
        if self._next_at is None:
            return self.interval_s
        return min(self.interval_s, max(0.0, self._next_at - self._clock()))

    def wake(self) -> None:
        """Sample now, between ticks (a replica went down or came back): the page shows it at its
        next poll rather than a tick later. The ticks keep their times."""
        self._woken.set()

    async def _loop(self) -> None:
        self._next_at = self._clock()
        while True:
            self._sample()
            now = self._clock()
            self._next_at += self.interval_s
            if self._next_at <= now:  # fell behind (a stalled loop): skip, do not catch up in a burst
                self._next_at = now + self.interval_s
            while await self._woken_before(self._next_at):
                self._sample()

    async def _woken_before(self, at: float) -> bool:
        try:
            await wait_for(self._woken.wait(), max(0.0, at - self._clock()))
        except TimeoutError:
            return False
        self._woken.clear()
        return True

    def _sample(self) -> None:
        try:
            self.tick()
        except Exception:  # a bug here must not end the history; say so each time
            logger.exception("dashboard sample failed")

    def tick(self) -> Sample:
        """Take one sample now, add it to the history and make it the latest."""
        now = self._clock()
        workers = self._registry.all()
        labels = label_workers(workers)
        self._read_scrapes(workers, labels)
        for w in workers:
            if not is_polled(w):
                self._histories[labels[w.id]].hold(now)
        totals = gt.read_totals(self._metrics, self._admission, labels.keys())
        self._totals.add(now, totals)
        t_rate, at_rate = self._totals.base(now - RATE_WINDOW_S)
        _, minute_ago = self._totals.base(now - MINUTE_S)
        replicas = [self._replica(w, labels[w.id], totals) for w in workers]
        replicas += self._recently_removed(now, set(labels.values()))
        sample = Sample(
            seq=self.ring.last_seq + 1, time=self._wall_clock(),
            fleet=fleet_of(replicas, at_rate, totals, now - t_rate, self._admission.queue_depth),
            replicas=tuple(replicas),
            tenants=tenants_of(self._admission.tenants, minute_ago, totals,
                               dict(self._admission.metrics.in_flight)),
            diagnosis=self._diagnose(replicas))
        self.ring.append(sample.time, ring_row(sample))
        self.latest = sample
        return sample

    def _read_scrapes(self, workers: list[Worker], labels: dict[str, str]) -> None:
        scraped, self._scraped = self._scraped, {}
        for w in workers:
            history = self._histories.get(labels[w.id])
            if history is None:
                history = self._histories[labels[w.id]] = ReplicaHistory(MINUTE_S, _MAX_WINDOW_ITEMS)
            if w.id in scraped:
                t, text = scraped[w.id]
                history.add(t, parse_exposition(text, only=KEPT_SERIES))

    def _replica(self, w: Worker, label: str, totals: gt.Totals) -> ReplicaSample:
        return ReplicaSample(
            label=label, worker_id=w.id, healthy=w.healthy, in_flight=w.in_flight,
            stats=self._histories[label].stats(), requests=totals[(gt.REQUESTS, w.id)],
            errors=totals[(gt.ERRORS, w.id)], retries=totals[(gt.RETRIES, w.id)],
            migrations=totals[(gt.MIGRATIONS, w.id)])

    def _recently_removed(self, now: float, present: set[str]) -> list[ReplicaSample]:
        """Replicas that left the registry less than REMOVED_VISIBLE_S ago, as down; older ones forgotten."""
        for label in present:
            self._gone.pop(label, None)
        out = []
        for label in [lb for lb in self._histories if lb not in present]:
            left_at = self._gone.setdefault(label, now)
            if now - left_at > REMOVED_VISIBLE_S:
                del self._histories[label], self._gone[label]
                continue
            out.append(ReplicaSample(label=label, worker_id=None, healthy=False, in_flight=0, stats=None,
                                     requests=0, errors=0, retries=0, migrations=0))
        return out

    def _diagnose(self, replicas: list[ReplicaSample]) -> dx.Diagnosis:
        windows = [self._histories[r.label].window(r.label, DIAGNOSIS_WINDOW_S, healthy=r.healthy)
                   for r in replicas]
        return dx.diagnose_fleet(windows, self._slo)
