"""TTFT wait estimate: exact in-flight against learned slots, the drain rate, no rate → start-now only."""

import math

import pytest

from dpserve.gateway.admission import WorkerLoad
from dpserve.gateway.admission.slo import WaitEstimate, estimate_wait, misses_slo, waiting_now


def test_idle_fleet_with_room_starts_at_once() -> None:
    est = estimate_wait([WorkerLoad("w", True)], 0, True, None)
    assert est == WaitEstimate(0.0, 0)
    assert not misses_slo(est, 1.0)


def test_a_queued_request_may_wait_whole_service_times() -> None:
    """2 replicas × 4 slots, all busy, 4 completions/s: a request is 2 s in service (8 / 4), and
    one queued behind a batch that started together waits for the batch to end."""
    busy = [WorkerLoad("a", True, in_flight=4, slots=4), WorkerLoad("b", True, in_flight=4, slots=4),
            WorkerLoad("dead", False, waiting=100)]
    first = estimate_wait(busy, gateway_queued=0, has_capacity=True, completions_per_s=4.0)
    assert (first.backlog, first.wait_s) == (0, pytest.approx(2.0))
    deep = estimate_wait(busy, gateway_queued=9, has_capacity=False, completions_per_s=4.0)
    assert (deep.backlog, deep.wait_s) == (9, pytest.approx(4.0))  # 10 places: two rounds of 8 slots
    assert misses_slo(deep, 3999.0) and not misses_slo(deep, 4001.0)


@pytest.mark.parametrize(("load", "slots", "expected"), [
    (WorkerLoad("a", True, in_flight=6), 4, 2),                         # ours beyond its slots
    (WorkerLoad("a", True, in_flight=3, waiting=5, in_flight_at_poll=3), 4, 5),  # another gateway's
    (WorkerLoad("a", True, in_flight=1, waiting=5, in_flight_at_poll=3), 4, 3),  # 2 finished since
    (WorkerLoad("a", True, in_flight=9, waiting=1, in_flight_at_poll=1), 4, 5),  # sent since the poll
])
def test_waiting_now_uses_exact_in_flight_not_the_stale_poll(load: WorkerLoad, slots: int,
                                                             expected: int) -> None:
    assert waiting_now(load, slots) == expected


def test_without_a_rate_only_what_can_start_at_once_is_admitted() -> None:
    """A cold burst: no completion yet, so nothing may queue behind a full replica."""
    assert estimate_wait([WorkerLoad("a", True, in_flight=0)], 0, True, None).wait_s == 0.0
    refused = estimate_wait([WorkerLoad("a", True, in_flight=1)], 0, True, None)
    assert math.isinf(refused.wait_s) and misses_slo(refused, 1e9)
    roomy = [WorkerLoad("a", True, in_flight=1), WorkerLoad("b", True, in_flight=0)]
    assert estimate_wait(roomy, 0, True, None).wait_s == 0.0  # b has room: it starts there
    seen_four = WorkerLoad("a", True, in_flight=3, running=3, in_flight_at_poll=3, slots=4)
    assert estimate_wait([seen_four], 0, True, None).wait_s == 0.0


def test_short_requests_make_short_waits() -> None:
    full = estimate_wait([WorkerLoad("a", True, in_flight=8, slots=8)], 0, True, 40.0)
    assert full.backlog == 0 and full.wait_s == pytest.approx(0.2)  # 8 in service at 40/s: 0.2 s each
