"""round_robin, random, least_load, power_of_two: exact behaviour under injected rng."""

from __future__ import annotations

import random
from collections import Counter

from dpserve.gateway.policies import build_policy
from dpserve.gateway.policies.base import Policy, RouteRequest
from dpserve.gateway.policies.config import PolicyConfig
from tests.unit.gateway.fakes import FakeClock, FakeWorker


def _make(name: str, seed: int = 5) -> Policy:
    return build_policy(PolicyConfig(policy=name), rng=random.Random(seed), clock=FakeClock())


def test_round_robin_cycles_in_id_order() -> None:
    fleet = [FakeWorker("w2"), FakeWorker("w0"), FakeWorker("w1")]
    policy = _make("round_robin")
    assert [policy.select(fleet, RouteRequest()).worker.id for _ in range(6)] == ["w0", "w1", "w2"] * 2


def test_random_follows_weights_within_tolerance() -> None:
    fleet = [FakeWorker("a", weight=1), FakeWorker("b", weight=3)]
    policy = _make("random")
    counts = Counter(policy.select(fleet, RouteRequest()).worker.id for _ in range(4000))
    assert abs(counts["b"] / 4000 - 0.75) < 0.03  # seeded; 0.03 ≈ 4.4 standard deviations


def test_least_load_prefers_weighted_least_then_in_flight() -> None:
    policy = _make("least_load")
    a, b = FakeWorker("a", polled_load=4), FakeWorker("b", polled_load=6, weight=2)
    assert policy.select([a, b], RouteRequest()).worker is b  # 6/2 = 3 < 4
    c, d = FakeWorker("c", polled_load=2), FakeWorker("d", polled_load=1, in_flight=1)
    assert c.load() == d.load() == 2
    assert policy.select([c, d], RouteRequest()).worker is c  # tie on load → fewer in flight


def test_least_load_spreads_a_burst_via_in_flight() -> None:
    policy = _make("least_load")
    fleet = [FakeWorker(f"w{i}") for i in range(4)]
    for _ in range(40):
        policy.select(fleet, RouteRequest()).worker.in_flight += 1  # type: ignore[attr-defined]
    assert [w.in_flight for w in fleet] == [10, 10, 10, 10]


def test_power_of_two_never_picks_the_most_loaded_of_three() -> None:
    policy = _make("power_of_two")
    fleet = [FakeWorker("a", polled_load=0), FakeWorker("b", polled_load=5), FakeWorker("c", polled_load=9)]
    picks = Counter(policy.select(fleet, RouteRequest()).worker.id for _ in range(300))
    assert picks["c"] == 0 and picks["a"] > picks["b"] > 0
