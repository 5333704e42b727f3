"""A real registry + metrics + admission with a fake clock, and replicas whose /metrics text is real."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dpserve.gateway.admission import Admission, AdmissionConfig, build_admission
from dpserve.gateway.config import BreakerConfig
from dpserve.gateway.dashboard.sampler import DashboardSampler
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.policies import build_policy
from dpserve.gateway.policies.config import PolicyConfig
from dpserve.gateway.registry import WorkerRegistry
from dpserve.gateway.worker import ReplicaOrigin, Worker
from tests.unit.gateway.dashboard.replica_text import ReplicaText
from tests.unit.gateway.fakes import FakeClock


@dataclass
class Fleet:
    clock: FakeClock
    registry: WorkerRegistry
    metrics: GatewayMetrics
    admission: Admission
    sampler: DashboardSampler
    replicas: dict[str, ReplicaText] = field(default_factory=dict)  # worker id → its /metrics

    def add(self, name: str | None) -> Worker:
        worker = self.registry.add(f"http://127.0.0.1:{9000 + len(self.replicas)}", 1.0,
                                   ReplicaOrigin(name, 0))
        worker.healthy = True
        self.replicas[worker.id] = ReplicaText()
        return worker

    def serve(self, worker: Worker, n: int, *, status: str = "200", tokens: int = 10, ttft_s: float = 0.05,
              reason: str = "cache_hit") -> None:
        """What the proxy records for `n` finished requests, and what the replica counts."""
        for _ in range(n):
            self.metrics.decision(reason)
            self.metrics.requests[(worker.id, status)] += 1
            self.metrics.duration.observe(0.1)
        if status == "200":
            self.replicas[worker.id].finish(n, ttft_s=ttft_s, tokens=tokens)

    def second(self) -> None:
        """One second passes: the poller scrapes every healthy worker, then the sampler ticks."""
        self.clock.advance(1.0)
        for worker in self.registry.all():
            if worker.healthy:
                self.sampler.on_scrape(worker, self.replicas[worker.id].text())
        self.sampler.tick()


def make_fleet(api_keys: Path | None = None, **admission: object) -> Fleet:
    clock = FakeClock()
    metrics = GatewayMetrics("cache_aware")
    registry = WorkerRegistry(build_policy(PolicyConfig(policy="round_robin"), clock=clock), BreakerConfig(),
                              clock, lambda weight: None)
    adm = build_admission(AdmissionConfig(api_keys=api_keys, **admission), registry, clock=clock)  # type: ignore[arg-type]
    sampler = DashboardSampler(registry, metrics, adm, clock=clock, wall_clock=lambda: 1.7e9 + clock.now)
    return Fleet(clock, registry, metrics, adm, sampler)
