"""CapacityGate on a real event loop with a scripted capacity view (no sleeps beyond loop turns)."""

from __future__ import annotations

import asyncio

import pytest

from dpserve.gateway.admission import WorkerLoad
from dpserve.gateway.admission.gate import CapacityGate
from dpserve.gateway.admission.rate_window import EventRate
from dpserve.gateway.admission.rejection import Rejection

from .fakes import FakeCapacity, FakeClock


def _gate(capacity: FakeCapacity, clock: FakeClock, queue_size: int = 10) -> tuple[CapacityGate, EventRate]:
    drain = EventRate(10.0, clock)
    return CapacityGate(capacity, queue_size=queue_size, drain=drain, clock=clock), drain


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


class Gateway:
    """Stands in for the gateway: counts admitted requests in in_flight right after enter()."""

    def __init__(self, gate: CapacityGate, capacity: FakeCapacity) -> None:
        self.gate, self.capacity = gate, capacity
        self.started: list[str] = []

    async def request(self, name: str, priority: int = 0, timeout_s: float = 60.0) -> None:
        await self.gate.enter(priority, timeout_s)
        self.capacity.in_flight += 1
        self.started.append(name)

    def finish(self) -> None:
        self.capacity.in_flight -= 1
        self.gate.pump()


async def test_waits_while_full_then_serves_in_arrival_order_one_slot_at_a_time() -> None:
    capacity, clock = FakeCapacity(cap=1), FakeClock()
    gate, _ = _gate(capacity, clock)
    gw = Gateway(gate, capacity)
    await gw.request("a")
    tasks = [asyncio.create_task(gw.request(n)) for n in ("b", "c", "d")]
    await _turns()
    assert gw.started == ["a"] and gate.depth == 3
    gw.finish()
    await _turns()
    assert gw.started == ["a", "b"] and capacity.in_flight == 1  # one free slot → one grant
    gw.finish()
    gw.finish()  # a second slot frees before the next grant is claimed
    capacity.in_flight = 0
    await _turns(10)
    assert gw.started == ["a", "b", "c"]
    gw.finish()
    await asyncio.gather(*tasks)
    assert gw.started == ["a", "b", "c", "d"] and gate.depth == 0


async def test_priority_classes_jump_ahead_of_arrival_order() -> None:
    capacity, clock = FakeCapacity(cap=1), FakeClock()
    gate, _ = _gate(capacity, clock)
    gw = Gateway(gate, capacity)
    await gw.request("first")
    tasks = [asyncio.create_task(gw.request(n, p)) for n, p in (("bulk", 5), ("normal", 0), ("vip", -1))]
    await _turns()
    for _ in range(3):
        gw.finish()
        await _turns()
    await asyncio.gather(*tasks)
    assert gw.started == ["first", "vip", "normal", "bulk"]


async def test_full_queue_answers_429_at_once() -> None:
    capacity, clock = FakeCapacity(cap=1), FakeClock()
    gate, _ = _gate(capacity, clock, queue_size=1)
    gw = Gateway(gate, capacity)
    await gw.request("a")
    waiting = asyncio.create_task(gw.request("b"))
    await _turns()
    with pytest.raises(Rejection) as info:
        await gate.enter(0, 60.0)
    assert info.value.status == 429 and info.value.code == "queue_full"
    assert "Retry-After" in info.value.headers
    gw.finish()
    await waiting


async def test_timeout_is_429_with_retry_after_from_drain_rate() -> None:
    capacity, clock = FakeCapacity(cap=1), FakeClock()
    gate, drain = _gate(capacity, clock)
    gw = Gateway(gate, capacity)
    await gw.request("a")
    for _ in range(4):  # 4 completions over 2 s: 2 requests/s
        drain.record()
        clock.advance(0.5)
    queued = [asyncio.create_task(gw.request(n, timeout_s=60.0)) for n in ("b", "c", "d", "e", "f")]
    await _turns()
    with pytest.raises(Rejection) as info:
        await gate.enter(0, 0.001)
    assert info.value.status == 429 and info.value.code == "queue_timeout"
    assert info.value.headers["Retry-After"] == "3"  # 5 ahead + itself at 2/s
    assert gate.depth == 5
    for task in queued:
        task.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    assert gate.depth == 0


async def test_cancelled_after_grant_passes_the_slot_on() -> None:
    capacity, clock = FakeCapacity(cap=1), FakeClock()
    gate, _ = _gate(capacity, clock)
    gw = Gateway(gate, capacity)
    await gw.request("a")
    b = asyncio.create_task(gw.request("b"))
    c = asyncio.create_task(gw.request("c"))
    await _turns()
    capacity.in_flight = 0
    gate.pump()  # grants b ...
    b.cancel()  # ... whose client disconnects before it runs
    await _turns(10)
    await c
    assert gw.started == ["a", "c"] and b.cancelled()


async def test_no_healthy_worker_passes_through_for_the_gateway_to_answer_503() -> None:
    capacity = FakeCapacity(cap=1, loads=[WorkerLoad("w", False)])
    gate, _ = _gate(capacity, FakeClock())
    assert await gate.enter(0, 60.0) == 0.0
