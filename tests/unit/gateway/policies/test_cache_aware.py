"""cache_aware: prefix hits stick, distinct prefixes spread, imbalance overrides, removal forgets."""

from __future__ import annotations

import random

from dpserve.gateway.policies import build_policy
from dpserve.gateway.policies.base import Policy, RouteRequest
from dpserve.gateway.policies.config import PolicyConfig
from tests.unit.gateway.fakes import FakeClock, FakeWorker


def _make(**knobs: float) -> Policy:
    return build_policy(PolicyConfig(policy="cache_aware", cache_threshold=0.5, **knobs),  # type: ignore[arg-type]
                        rng=random.Random(0), clock=FakeClock())


def test_shared_prefix_follows_the_first_choice() -> None:
    policy = _make()
    fleet = [FakeWorker(f"w{i}") for i in range(3)]
    system = "<|system|>You are a helpful assistant with a long shared system prompt. "
    first = policy.select(fleet, RouteRequest(system + "<|user|>one"))
    assert first.reason == "cache_miss"
    first.worker.in_flight += 1  # type: ignore[attr-defined]
    for q in ("two", "three", "four"):
        choice = policy.select(fleet, RouteRequest(system + "<|user|>" + q))
        assert (choice.worker, choice.reason) == (first.worker, "cache_hit")


def test_distinct_prefixes_spread_by_load() -> None:
    policy = _make()
    fleet = [FakeWorker(f"w{i}") for i in range(3)]
    for i in range(6):
        w = policy.select(fleet, RouteRequest(f"<|user|>topic {i} " + "x" * 40)).worker
        w.in_flight += 1  # type: ignore[attr-defined]
    assert [w.in_flight for w in fleet] == [2, 2, 2]


def test_imbalance_overrides_the_cache_and_still_records() -> None:
    policy = _make(balance_abs_threshold=4, balance_rel_threshold=1.5)
    hot, cold = FakeWorker("hot"), FakeWorker("cold")
    text = "<|user|>" + "p" * 50
    assert policy.select([hot], RouteRequest(text)).worker is hot  # recorded on hot
    hot.in_flight = 10
    choice = policy.select([hot, cold], RouteRequest(text))
    assert (choice.worker, choice.reason) == (cold, "imbalance")
    hot.in_flight = 0
    assert policy.select([cold], RouteRequest(text)).reason == "cache_hit"  # recorded on cold too


def test_weight_scales_imbalance_and_fallback() -> None:
    policy = _make(balance_abs_threshold=100)
    big, small = FakeWorker("big", weight=4, in_flight=6), FakeWorker("small", weight=1, in_flight=2)
    assert policy.select([big, small], RouteRequest("fresh text")).worker is big  # 6/4 < 2/1


def test_removed_worker_leaves_the_tree() -> None:
    policy = _make()
    a, b = FakeWorker("a"), FakeWorker("b")
    text = "<|user|>" + "q" * 100
    assert policy.select([a], RouteRequest(text)).worker is a
    size = policy.gauges()["dpserve_cache_tree_chars"]
    assert size == len(text)
    policy.on_worker_removed("a")
    assert policy.gauges()["dpserve_cache_tree_chars"] == 0
    assert policy.select([b], RouteRequest(text)).reason == "cache_miss"


def test_tree_chars_stay_in_budget() -> None:
    policy = _make(max_tree_chars=1000)
    fleet = [FakeWorker(f"w{i}") for i in range(8)]
    for i in range(500):
        policy.select(fleet, RouteRequest(f"<|user|>conversation {i} " + "z" * 30))
    assert policy.gauges()["dpserve_cache_tree_chars"] <= 1000


def test_hit_held_by_several_goes_to_the_least_loaded_holder() -> None:
    policy = _make()
    a, b, c = FakeWorker("a"), FakeWorker("b"), FakeWorker("c", in_flight=0)
    text = "<|system|>" + "s" * 80
    policy.select([a], RouteRequest(text))
    policy.select([b], RouteRequest(text))
    a.in_flight, b.in_flight = 3, 1
    choice = policy.select([a, b, c], RouteRequest(text + "<|user|>q"))
    assert (choice.worker, choice.reason) == (b, "cache_hit")


def test_miss_between_equal_loads_goes_to_the_worker_holding_least_text() -> None:
    policy = _make()
    fleet = [FakeWorker(f"w{i}") for i in range(3)]
    big = policy.select(fleet, RouteRequest("<|user|>" + "a" * 400)).worker
    small = policy.select([w for w in fleet if w is not big], RouteRequest("<|user|>" + "b" * 40)).worker
    empty = next(w for w in fleet if w not in (big, small))
    assert policy.select(fleet, RouteRequest("<|user|>" + "c" * 40)).worker is empty
    assert policy.select([big, small], RouteRequest("<|user|>" + "d" * 40)).worker is small


def test_miss_goes_to_the_smallest_tree_even_with_more_requests_in_flight() -> None:
    # Cold burst of a shared-prefix workload: w0 serves three cheap hits of one prefix, w1 two
    # distinct prefixes. A new prefix costs a full prefill; it goes to w0, which holds less text,
    # not to w1 because of its lower request count.
    policy = _make()
    w0, w1 = FakeWorker("w0"), FakeWorker("w1")
    shared = "<|system|>" + "s" * 300
    policy.select([w0], RouteRequest(shared + "<|user|>q0"))
    for i in range(1, 3):
        assert policy.select([w0, w1], RouteRequest(shared + f"<|user|>q{i}")).worker is w0
    policy.select([w1], RouteRequest("<|system|>" + "t" * 300 + "<|user|>q"))
    policy.select([w1], RouteRequest("<|system|>" + "u" * 300 + "<|user|>q"))
    w0.in_flight, w1.in_flight = 3, 2
    choice = policy.select([w0, w1], RouteRequest("<|system|>" + "v" * 300 + "<|user|>q"))
    assert (choice.worker, choice.reason) == (w0, "cache_miss")


def test_miss_between_equal_trees_goes_to_the_least_loaded() -> None:
    policy = _make()
    busy, idle = FakeWorker("busy", in_flight=5), FakeWorker("idle", in_flight=1)
    assert policy.select([busy, idle], RouteRequest("<|user|>" + "n" * 60)).worker is idle


def test_second_turn_stays_with_the_session_at_the_default_threshold() -> None:
    # turn 2 resends turn 1 (256 tokens) + the answer (32) + a new 256: ~47 % matched, above 0.3.
    policy = build_policy(PolicyConfig(policy="cache_aware"), rng=random.Random(0), clock=FakeClock())
    fleet = [FakeWorker(f"w{i}") for i in range(4)]
    turn1 = "<|user|>" + "q" * 1024
    home = policy.select(fleet, RouteRequest(turn1)).worker
    turn2 = turn1 + "<|assistant|>" + "a" * 128 + "<|user|>" + "r" * 1024
    choice = policy.select(fleet, RouteRequest(turn2))
    assert (choice.worker, choice.reason) == (home, "cache_hit")
