import pytest

from dpserve.gateway.admission import WorkerLoad
from dpserve.gateway.admission.slo import WaitEstimate, estimate_wait, misses_slo


def test_idle_fleet_with_room_starts_at_once() -> None:
    est = estimate_wait([WorkerLoad("w", True)], 0, True, None)
    assert est == WaitEstimate(0.0, 0)
    assert not misses_slo(est, 1.0)


def test_backlog_drains_at_fleet_completion_rate() -> None:
    loads = [WorkerLoad("a", True, waiting=3), WorkerLoad("b", True, waiting=2),
             WorkerLoad("dead", False, waiting=100)]
    est = estimate_wait(loads, gateway_queued=4, has_capacity=False, completions_per_s=10.0)
    assert est is not None
    assert est.backlog == 9
    assert est.wait_s == pytest.approx(1.0)
    assert misses_slo(est, 999.0)
    assert not misses_slo(est, 1001.0)


def test_full_workers_without_rate_evidence_do_not_refuse() -> None:
    est = estimate_wait([WorkerLoad("a", True)], 0, False, None)
    assert est is None
    assert not misses_slo(est, 1.0)
