"""consistent_hash: sticky by key, bounded load with ring overflow, minimal movement, failover memory."""

from __future__ import annotations

import random
from collections import Counter

from dpserve.gateway.policies import build_policy
from dpserve.gateway.policies.base import Policy, RouteRequest
from dpserve.gateway.policies.config import PolicyConfig
from tests.unit.gateway.fakes import FakeClock, FakeWorker


def _make(**knobs: object) -> Policy:
    return build_policy(PolicyConfig(policy="consistent_hash", **knobs),  # type: ignore[arg-type]
                        rng=random.Random(0), clock=FakeClock())


def _fleet(policy: Policy, n: int) -> list[FakeWorker]:
    fleet = [FakeWorker(f"w{i}") for i in range(n)]
    for w in fleet:
        policy.on_worker_added(w)
    return fleet


def test_same_key_same_worker_and_keys_spread() -> None:
    policy = _make()
    fleet = _fleet(policy, 4)
    homes = {f"s{i}": policy.select(fleet, RouteRequest("", f"s{i}")).worker.id for i in range(400)}
    for key, home in homes.items():
        choice = policy.select(fleet, RouteRequest("", key))
        assert (choice.worker.id, choice.reason) == (home, "sticky")
    counts = Counter(homes.values())
    assert min(counts.values()) > 60  # 160 virtual nodes: each of 4 gets a fair share of 400


def test_adding_a_worker_moves_only_keys_it_takes() -> None:
    policy = _make()
    fleet = _fleet(policy, 4)
    keys = [f"user-{i}" for i in range(1000)]
    before = {k: policy.select(fleet, RouteRequest("", k)).worker.id for k in keys}
    fleet += _fleet_add(policy, "w4")
    after = {k: policy.select(fleet, RouteRequest("", k)).worker.id for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == "w4" for k in moved)
    assert 100 < len(moved) < 320  # ~1/5 of the keys


def _fleet_add(policy: Policy, worker_id: str) -> list[FakeWorker]:
    w = FakeWorker(worker_id)
    policy.on_worker_added(w)
    return [w]


def test_bound_sends_overflow_to_the_next_on_the_ring() -> None:
    policy = _make(hash_balance_factor=1.25)
    fleet = _fleet(policy, 4)
    home = policy.select(fleet, RouteRequest("", "hot")).worker
    for _ in range(20):
        choice = policy.select(fleet, RouteRequest("", "hot"))
        choice.worker.in_flight += 1  # type: ignore[attr-defined]
        total = sum(w.in_flight for w in fleet)
        assert max(w.in_flight for w in fleet) <= max(1, -(-1.25 * total // 4))
    assert home.in_flight < 20 and sum(w.in_flight for w in fleet) == 20


def test_failover_stays_unless_return_home() -> None:
    for return_home in (False, True):
        policy = _make(sticky_return_home=return_home)
        fleet = _fleet(policy, 3)
        home = policy.select(fleet, RouteRequest("", "sess")).worker
        others = [w for w in fleet if w is not home]
        moved = policy.select(others, RouteRequest("", "sess"))
        assert moved.reason == "failover" and moved.worker is not home
        back = policy.select(fleet, RouteRequest("", "sess")).worker
        assert back is (home if return_home else moved.worker)


def test_no_key_falls_back_to_least_load() -> None:
    policy = _make()
    fleet = _fleet(policy, 2)
    fleet[0].in_flight = 3
    choice = policy.select(fleet, RouteRequest("text", None))
    assert (choice.worker, choice.reason) == (fleet[1], "no_key")


def test_heavy_weight_ring_builds_fast_and_walks_all_workers() -> None:
    """Weight 100 (the documented max) × 160 virtual nodes: built by one sort, not n² inserts."""
    policy = _make()
    fleet = _fleet(policy, 3)
    heavy = FakeWorker("heavy", weight=100.0)
    policy.on_worker_added(heavy)
    ring = policy.ring  # type: ignore[attr-defined]
    assert len(ring._points) == 3 * 160 + 100 * 160
    assert ring._points == sorted(ring._points)
    order = ring.walk("some-session")
    assert sorted(order) == sorted([w.id for w in fleet] + ["heavy"])
    homes = Counter(policy.select([*fleet, heavy], RouteRequest("", f"s{i}")).worker.id for i in range(200))
    assert homes["heavy"] > 150  # ~97% of the ring is its


def test_readding_a_worker_replaces_its_points() -> None:
    policy = _make()
    fleet = _fleet(policy, 2)
    policy.on_worker_added(fleet[0])
    ring = policy.ring  # type: ignore[attr-defined]
    assert len(ring._points) == 2 * 160
    policy.on_worker_removed("w0")
    assert set(ring._owners) == {"w1"} and ring.walk("k") == ["w1"]
