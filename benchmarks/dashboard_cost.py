"""What the dashboard costs the gateway's event loop, per call: one sample (`DashboardSampler.tick`,
once a second whether anyone watches) and one `GET /dashboard/data` answer (the page's poll, and the
first load with the whole 15-minute history), for N replicas with real vLLM-named /metrics text.

    flock /tmp/dpserve-bench.lock .venv/bin/python benchmarks/dashboard_cost.py --replicas 3 16 64

In process, no sockets: the numbers are CPU time of the Python code (orjson encoding included).
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from dpserve.gateway.admission import AdmissionConfig, build_admission
from dpserve.gateway.config import BreakerConfig
from dpserve.gateway.dashboard.view import Dashboard
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.policies import build_policy
from dpserve.gateway.policies.config import PolicyConfig
from dpserve.gateway.registry import WorkerRegistry
from dpserve.gateway.worker import ReplicaOrigin
from dpserve.serving.engine_client import EngineStats
from dpserve.serving.metrics import ReplicaMetrics


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def _replica_text(seconds: int) -> str:
    metrics = ReplicaMetrics("m")
    for i in range(200 + seconds):
        metrics.record_first_token(0.001 * (i % 300))
        metrics.record_inter_token(0.02, 1)
        metrics.record_finished(num_prompt_tokens=50, num_generated_tokens=20, finish_reason="stop",
                                e2e_s=0.5)
    return metrics.render(EngineStats(3, 1, 0.25, 1000 + seconds, 400))


def measure(replicas: int, samples: int) -> dict[str, float]:
    clock = Clock()
    metrics = GatewayMetrics("cache_aware")
    registry = WorkerRegistry(build_policy(PolicyConfig(), clock=clock), BreakerConfig(), clock,
                              lambda weight: None)
    admission = build_admission(AdmissionConfig(), registry, clock=clock)
    workers = [registry.add(f"http://127.0.0.1:{9000 + i}", 1.0, ReplicaOrigin(f"r{i}"))
               for i in range(replicas)]
    for w in workers:
        w.healthy = True
    dashboard = Dashboard(registry, metrics, admission, clock=clock, wall_clock=clock)
    texts = [_replica_text(s) for s in range(8)]  # counters that move between scrapes
    ticks: list[float] = []
    for s in range(samples):
        clock.now += 1.0
        for i, w in enumerate(workers):
            metrics.requests[(w.id, "200")] += 10
            metrics.decision("cache_hit")
            dashboard.on_scrape(w, texts[(s + i) % len(texts)])
        t0 = time.process_time()
        dashboard.sampler.tick()
        ticks.append(time.process_time() - t0)
    seq = dashboard.sampler.ring.last_seq

    def answer(query: dict[str, str]) -> float:
        runs = []
        for _ in range(20):
            t0 = time.process_time()
            orjson.dumps(dashboard.data(query))
            runs.append(time.process_time() - t0)
        return statistics.median(runs)

    return {"tick_ms": statistics.median(ticks[-300:]) * 1e3,
            "poll_ms": answer({"since": str(seq - 1)}) * 1e3,
            "first_load_ms": answer({}) * 1e3,
            "first_load_kb": len(orjson.dumps(dashboard.data({}))) / 1024,
            "poll_kb": len(orjson.dumps(dashboard.data({"since": str(seq - 1)}))) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, nargs="+", default=[3, 16, 64])
    ap.add_argument("--samples", type=int, default=960, help="samples before measuring (history: 900)")
    args = ap.parse_args()
    print("| replicas | tick ms (once a second) | page poll ms | poll KB | first load ms | first load KB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in args.replicas:
        r = measure(n, args.samples)
        print(f"| {n} | {r['tick_ms']:.2f} | {r['poll_ms']:.2f} | {r['poll_kb']:.1f} | "
              f"{r['first_load_ms']:.1f} | {r['first_load_kb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
