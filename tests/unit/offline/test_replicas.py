"""ReplicaPool: down on transport errors, breaker with doubling cool-down, all-down clock."""

from __future__ import annotations

from dpserve.offline.replicas import BreakerSettings, ReplicaPool


def _pool(now: list[float]) -> ReplicaPool:
    return ReplicaPool(["http://a/", "http://b"], clock=lambda: now[0],
                       breaker=BreakerSettings(failure_threshold=2, cooldown_s=1.0, cooldown_max_s=3.0))


def test_unreachable_is_down_at_once_and_probed_at_once() -> None:
    now = [0.0]
    pool = _pool(now)
    a = pool.replicas[0]
    assert a.url == "http://a"
    pool.record_failure(a, unreachable=True)
    assert not a.is_healthy and pool.due_for_probe() == [a] and pool.healthy_ids() == {"r1"}


def test_breaker_trips_after_threshold_with_doubling_capped_cooldown() -> None:
    now = [0.0]
    pool = _pool(now)
    a = pool.replicas[0]
    for expected_cooldown in (1.0, 2.0, 3.0):
        pool.record_failure(a, unreachable=False)
        assert a.is_healthy
        pool.record_failure(a, unreachable=False)
        assert not a.is_healthy and a.probe_after - now[0] == expected_cooldown
        assert pool.due_for_probe() == []
        now[0] = a.probe_after
        assert pool.due_for_probe() == [a]
        pool.mark_up(a)
    pool.record_success(a)
    assert a.trips == 0 and a.consecutive_failures == 0


def test_all_down_clock() -> None:
    now = [5.0]
    pool = _pool(now)
    for r in pool.replicas:
        pool.mark_down(r)
    now[0] = 7.5
    assert pool.all_down_for_s() == 2.5
    pool.mark_up(pool.replicas[1])
    assert pool.all_down_for_s() == 0.0
