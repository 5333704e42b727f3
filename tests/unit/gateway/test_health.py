"""HealthChecker thresholds: down after N failed probes, up after M good ones, refused = down now."""

from __future__ import annotations

from typing import Any

from dpserve.gateway.circuit_breaker import CircuitBreaker
from dpserve.gateway.config import BreakerConfig, HealthConfig
from dpserve.gateway.health import HealthChecker
from dpserve.gateway.worker import Worker
from tests.unit.gateway.fakes import FakeClock


class ScriptedChecker(HealthChecker):
    """Probe answers come from a list instead of the network."""

    answers: list[bool]

    async def _get_health(self, worker: Worker) -> bool:
        return self.answers.pop(0)


def _setup(**cfg: Any) -> tuple[ScriptedChecker, Worker, list[bool]]:
    worker = Worker("w0", "http://x", 1.0, CircuitBreaker(BreakerConfig(), FakeClock()))
    flips: list[bool] = []
    checker = ScriptedChecker(HealthConfig(**cfg), http=None,  # type: ignore[arg-type]
                              workers=lambda: [worker], on_change=lambda w, up: flips.append(up))
    return checker, worker, flips


async def test_thresholds_move_a_worker_down_and_up() -> None:
    checker, worker, flips = _setup(health_failure_threshold=2, health_success_threshold=2)
    checker.answers = [True, False, True, False, False, True, True]
    await checker.probe(worker)
    assert worker.healthy  # a new worker that answers is up at once
    for _ in range(4):
        await checker.probe(worker)
    assert not worker.healthy and flips == [True, False]  # only two failures in a row count
    await checker.probe(worker)
    assert not worker.healthy
    await checker.probe(worker)
    assert worker.healthy and flips == [True, False, True]


async def test_refused_connection_takes_it_out_at_once() -> None:
    checker, worker, flips = _setup(health_failure_threshold=3, health_success_threshold=1)
    checker.answers = [True, True]
    await checker.probe(worker)
    checker.report_refused(worker)
    assert not worker.healthy and flips == [True, False]
    await checker.probe(worker)
    assert worker.healthy


async def test_a_stall_is_the_first_strike_and_probes_at_once() -> None:
    checker, worker, flips = _setup(health_failure_threshold=3, health_success_threshold=1)
    checker.answers = [True, False]
    await checker.probe(worker)
    checker.report_stall(worker)
    await checker._extra_probes.wait_all()
    assert not worker.healthy and flips == [True, False]  # the stall + one failed probe
    checker.answers = [True, True]
    await checker.probe(worker)
    checker.report_stall(worker)
    await checker._extra_probes.wait_all()
    assert worker.healthy and flips == [True, False, True]  # it answered: still up
