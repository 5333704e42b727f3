"""TTFT SLO mode: candidates are the workers where a request would wait least (free slots first)."""

from __future__ import annotations

from dpserve.gateway.config import BreakerConfig
from dpserve.gateway.loads import PolledLoad
from dpserve.gateway.policies import build_policy
from dpserve.gateway.policies.config import PolicyConfig
from dpserve.gateway.registry import WorkerRegistry
from tests.unit.gateway.fakes import FakeClock


def _registry(slots_first: bool, cap: int | None = None) -> WorkerRegistry:
    registry = WorkerRegistry(build_policy(PolicyConfig(policy="cache_aware", seed=0)), BreakerConfig(),
                              FakeClock(), lambda weight: cap, slots_first=slots_first)
    for i in range(3):
        registry.add(f"http://127.0.0.1:{9000 + i}").healthy = True
    return registry


def test_full_replicas_are_not_candidates_while_another_has_room() -> None:
    registry = _registry(slots_first=True)
    w0, w1, w2 = registry.all()
    for w, running, in_flight in ((w0, 4, 6), (w1, 4, 4), (w2, 4, 2)):
        w.polled, w.most_running, w.in_flight = PolledLoad(running=running), 4, in_flight
        w.saturated = True  # a poll saw requests waiting beside 4 running: 4 slots
    assert registry.candidates() == [w2]  # the only one with a free slot
    w2.in_flight = 4
    assert registry.candidates() == [w1, w2]  # both full: each would queue 1 (w0 queues 3)
    assert [w.id for w in _registry(slots_first=False).candidates()] == ["w0", "w1", "w2"]


def test_slots_grow_by_one_until_a_replica_is_seen_full() -> None:
    registry = _registry(slots_first=True, cap=None)
    w0 = registry.all()[0]
    w0.in_flight = 1  # nothing seen running yet: 1 slot to discover, taken
    assert w0 not in registry.candidates()
    assert registry.load_snapshot()[0].slots == 1
    w0.most_running = 3  # seen running 3, never full: one more may be tried
    assert w0.slots(None) == 4
    w0.saturated = True  # seen with requests waiting: exactly what it ran then
    assert w0.slots(None) == 3
    capped = _registry(slots_first=True, cap=8)
    capped.all()[0].in_flight = 7
    assert len(capped.candidates()) == 3 and capped.load_snapshot()[0].slots == 8
