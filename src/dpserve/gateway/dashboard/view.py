"""Dashboard: what the gateway holds for `GET /dashboard` and `GET /dashboard/data` — sampler and answers.

Framework-free: a route handler passes the query and returns `page()` or `data(...)` as they are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from dpserve import diagnosis as dx
from dpserve.errors import HTTPError
from dpserve.gateway.admission import Admission
from dpserve.gateway.dashboard.page import Page, dashboard_page
from dpserve.gateway.dashboard.sampler import DashboardSampler
from dpserve.gateway.dashboard.snapshot import build_snapshot
from dpserve.gateway.loads import PolledWorker
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.registry import WorkerRegistry


class Dashboard:
    """Owns the sampler (start/stop with the gateway) and builds the page and the JSON document."""

    def __init__(self, registry: WorkerRegistry, metrics: GatewayMetrics, admission: Admission, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._registry = registry
        self._admission = admission
        self._policy = metrics.policy_name
        slo_ms = admission.config.ttft_slo_ms  # the TTFT rule of the diagnosis uses the gateway's SLO
        slo = dx.Slo(ttft_s=slo_ms / 1000.0 if slo_ms is not None else None)
        self.sampler = DashboardSampler(registry, metrics, admission, slo=slo, clock=clock,
                                        wall_clock=wall_clock)

    def start(self) -> None:
        self.sampler.start()

    async def stop(self) -> None:
        await self.sampler.stop()

    def on_scrape(self, worker: PolledWorker, text: str) -> None:
        self.sampler.on_scrape(worker, text)

    def on_health_change(self) -> None:
        """A replica went down or came back: sampled at once, so the page shows it within a poll."""
        self.sampler.wake()

    def page(self) -> Page:
        return dashboard_page()

    def data(self, query: Mapping[str, str]) -> dict[str, Any]:
        """The JSON document; `since=SEQ` limits the history to newer samples, `series=0` leaves it out.
        HTTPError 400 for a bad parameter."""
        since = _int_param(query, "since", 0)
        with_series = _int_param(query, "series", 1)
        s = self.sampler
        return build_snapshot(
            s.latest, self._registry.all(), s.ring.since(since) if with_series else None,
            queue_depth=self._admission.queue_depth, policy=self._policy, interval_s=s.interval_s,
            history_s=s.ring.capacity * s.interval_s, next_sample_in_s=s.next_sample_in_s())


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise HTTPError(400, f"'{name}' must be a non-negative integer, got {raw[:40]!r}", param=name)
    return int(raw)
