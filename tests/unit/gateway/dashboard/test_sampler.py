"""DashboardSampler: fleet and replica numbers from the gateway's counters and the poller's scrapes,
replicas that leave and come back, tenants against their limits, and memory bounded under load."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from pathlib import Path

import orjson
import pytest

from dpserve.diagnosis import State
from dpserve.gateway.dashboard.sample import Sample
from dpserve.gateway.dashboard.sampler import REMOVED_VISIBLE_S, DashboardSampler
from dpserve.gateway.dashboard.view import Dashboard
from tests.unit.gateway.dashboard.fleet import make_fleet


def test_fleet_rates_routing_reasons_and_replica_tokens() -> None:
    fleet = make_fleet()
    workers = [fleet.add(f"r{i}") for i in range(3)]
    for _ in range(10):
        for w in workers:
            fleet.serve(w, 10, tokens=20, reason="cache_hit")
        fleet.serve(workers[0], 5, reason="imbalance")
        fleet.second()
    sample = fleet.sampler.latest
    assert sample is not None and sample.seq == 10
    assert sample.fleet.request_rate == pytest.approx(35.0)
    assert sample.fleet.decisions_per_s == pytest.approx({"cache_hit": 30.0, "imbalance": 5.0})
    assert sample.fleet.decisions_total == {"cache_hit": 300, "imbalance": 50}
    assert [r.label for r in sample.replicas] == ["r0", "r1", "r2"]
    r0 = sample.replicas[0].stats
    assert r0 is not None and r0.generation_tokens_per_s == pytest.approx(10 * 20 + 5 * 10)
    assert sample.fleet.generation_tokens_per_s == pytest.approx(250.0 + 200.0 + 200.0)


def test_errors_retries_and_429s_are_counted_per_worker_and_for_the_fleet() -> None:
    fleet = make_fleet()
    fleet.add("r0")
    w1 = fleet.add("r1")
    fleet.second()
    fleet.serve(w1, 3, status="502")
    fleet.serve(w1, 1, status="404")  # the client's fault: not an error of the replica
    fleet.metrics.worker_retries[(w1.id,)] += 3
    fleet.admission.metrics.rejected_status[429] += 10
    fleet.admission.metrics.rejected[("queue_full", "default")] += 10
    fleet.second()
    sample = fleet.sampler.latest
    assert sample is not None
    r1 = sample.replicas[1]
    assert (r1.errors, r1.retries, r1.requests) == (3, 3, 4)
    assert (sample.replicas[0].errors, sample.replicas[0].retries) == (0, 0)
    assert sample.fleet.rejected_429_per_s == pytest.approx(10.0)
    assert sample.fleet.rejected_total == {"queue_full": 10}


def test_a_removed_replica_shows_down_then_is_forgotten_and_its_name_comes_back() -> None:
    fleet = make_fleet()
    workers = [fleet.add(f"r{i}") for i in range(3)]
    for _ in range(3):
        fleet.second()
    fleet.registry.remove(workers[1].id)  # a launcher restarting r1 takes it out of the gateway
    fleet.second()
    sample = fleet.sampler.latest
    assert sample is not None
    gone = next(r for r in sample.replicas if r.label == "r1")
    assert (gone.worker_id, gone.healthy) == (None, False)
    finding = sample.diagnosis.replicas[[r.label for r in sample.replicas].index("r1")]
    assert finding.state is State.DOWN and "r1 is down" in finding.message
    back = fleet.add("r1")  # restarted: a new worker id, the same name
    fleet.second()
    sample = fleet.sampler.latest
    assert sample is not None
    assert [(r.label, r.worker_id) for r in sample.replicas if r.label == "r1"] == [("r1", back.id)]
    fleet.registry.remove(back.id)
    for _ in range(int(REMOVED_VISIBLE_S) + 2):
        fleet.second()
    sample = fleet.sampler.latest
    assert sample is not None and [r.label for r in sample.replicas] == ["r0", "r2"]


def test_workers_without_a_name_or_with_a_shared_one_are_shown_by_worker_id() -> None:
    fleet = make_fleet()
    a, b, c = fleet.add(None), fleet.add("dup"), fleet.add("dup")
    fleet.second()
    sample = fleet.sampler.latest
    assert sample is not None and [r.label for r in sample.replicas] == [a.id, b.id, c.id]


def test_tenant_usage_over_the_last_minute_against_its_limits(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - {key: k1, tenant: team-a, requests_per_minute: 100, max_concurrency: 4}\n"
                    "  - {key: k2, tenant: team-b}\n")
    fleet = make_fleet(api_keys=keys)
    fleet.add("r0")
    am = fleet.admission.metrics
    for second in range(90):
        am.admitted["team-a"] += 1
        am.tokens[("team-a", "prompt")] += 10
        am.tokens[("team-a", "completion")] += 5
        am.in_flight["team-a"] = 2 if second < 89 else 3
        fleet.second()
    sample = fleet.sampler.latest
    assert sample is not None
    team_a, team_b = sample.tenants
    assert (team_a.tenant, team_a.requests_last_minute, team_a.tokens_last_minute, team_a.in_flight) == \
        ("team-a", 60, 900, 3)
    assert (team_a.limits.requests_per_minute, team_a.limits.max_concurrency) == (100, 4)
    assert (team_b.tenant, team_b.requests_last_minute) == ("team-b", 0)
    assert team_b.limits.requests_per_minute is None


def test_memory_stays_bounded_after_100k_requests() -> None:
    """The recording path driven directly: 100k requests over ~22 simulated minutes (the history
    holds 15), three replicas scraped every second, one restarted after the history filled."""
    fleet = make_fleet()
    workers = [fleet.add(f"r{i}") for i in range(3)]
    dashboard = Dashboard(fleet.registry, fleet.metrics, fleet.admission, clock=fleet.clock)
    dashboard.sampler = fleet.sampler
    requests_per_second, seconds = 77, 1300
    traced: dict[int, int] = {}
    tracemalloc.start()  # from the start: memory taken before tracing began would hide reuse
    for second in range(seconds):
        if second == 1000:  # the history is full: from here on nothing should accumulate
            gc.collect()
            traced[second] = tracemalloc.get_traced_memory()[0]
        for i, worker in enumerate(workers):
            fleet.serve(worker, requests_per_second // 3 + (i < requests_per_second % 3), tokens=8)
        if second == 1150:
            fleet.registry.remove(workers[2].id)
            workers[2] = fleet.add("r2")
        fleet.second()
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - traced[1000]
    tracemalloc.stop()
    assert fleet.metrics.duration.count == requests_per_second * seconds >= 100_000
    assert len(fleet.sampler.ring) == fleet.sampler.ring.capacity == 900
    # Once the history is full, another 23k requests add no memory (the restarted worker's new
    # counters in GatewayMetrics are a few hundred bytes).
    assert grown < 64 * 1024, grown
    whole = orjson.dumps(dashboard.data({}))
    assert len(whole) < 400 * 1024  # the full 15-minute history of 3 replicas
    assert len(orjson.dumps(dashboard.data({"since": str(fleet.sampler.ring.last_seq - 1)}))) < 8 * 1024


async def test_a_health_change_is_sampled_at_once_between_ticks() -> None:
    """A replica going down is in a sample at once, not at the next tick (an hour away here);
    the ticks keep their times."""
    fleet = make_fleet()
    w = fleet.add("a")
    sampler = DashboardSampler(fleet.registry, fleet.metrics, fleet.admission, interval_s=3600.0,
                               clock=fleet.clock)
    sampler.start()
    try:
        first = await _next_sample(sampler, None)  # the first tick, at start
        assert first.replicas[0].healthy
        next_tick_in_s = sampler.next_sample_in_s()
        w.healthy = False
        sampler.wake()  # what the gateway's health checker does on a flip
        latest = await _next_sample(sampler, first)
        assert latest.seq == first.seq + 1 and not latest.replicas[0].healthy
        assert sampler.next_sample_in_s() == next_tick_in_s  # the grid did not move
    finally:
        await sampler.stop()


async def _next_sample(sampler: DashboardSampler, after: Sample | None) -> Sample:
    for _ in range(1000):  # the loop's turn; bounded so a missing sample fails, not hangs
        if sampler.latest is not None and sampler.latest is not after:
            return sampler.latest
        await asyncio.sleep(0.01)
    raise AssertionError("no new sample")
