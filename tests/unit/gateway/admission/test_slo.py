"""TTFT wait estimate: exact in-flight against learned slots, the drain rate, no rate → start-now only."""

import math

import pytest

from dpserve.gateway.admission import WorkerLoad
from dpserve.gateway.admission.slo import WaitEstimate, estimate_wait, misses_slo, waiting_now


def test_idle_fleet_with_room_starts_at_once() -> None:
    est = estimate_wait([WorkerLoad("w", True)], 0, True, None)
    assert est == WaitEstimate(0.0, 0)
    assert not misses_slo(est, 1.0)


def test_backlog_drains_at_fleet_completion_rate() -> None:
    loads = [WorkerLoad("a", True, waiting=3, in_flight_at_poll=0), WorkerLoad("b", True, waiting=2),
             WorkerLoad("dead", False, waiting=100)]
    est = estimate_wait(loads, gateway_queued=4, has_capacity=False, completions_per_s=10.0)
    assert est.backlog == 9
    assert est.wait_s == pytest.approx(1.0)
    assert misses_slo(est, 999.0)
    assert not misses_slo(est, 1001.0)


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


def test_full_replica_waits_for_one_completion() -> None:
    full = estimate_wait([WorkerLoad("a", True, in_flight=8, slots=8)], 0, True, 4.0)
    assert full.backlog == 0 and full.wait_s == pytest.approx(0.25)
