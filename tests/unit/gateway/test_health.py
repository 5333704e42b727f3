"""HealthChecker thresholds: down after N failed probes, up after M good ones, refused = down now."""

from __future__ import annotations

import gzip
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dpserve.gateway.circuit_breaker import CircuitBreaker
from dpserve.gateway.config import BreakerConfig, HealthConfig
from dpserve.gateway.health import HealthChecker
from dpserve.gateway.loads import PolledLoad
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
    checker.report_suspect(worker)
    await checker._extra_probes.wait_all()
    assert not worker.healthy and flips == [True, False]  # the stall + one failed probe
    checker.answers = [True, True]
    await checker.probe(worker)
    checker.report_suspect(worker)
    await checker._extra_probes.wait_all()
    assert worker.healthy and flips == [True, False, True]  # it answered: still up


async def test_a_fresh_load_poll_stands_in_for_the_probe() -> None:
    """One poll per interval: a healthy worker whose /metrics just answered is not also probed."""
    clock = FakeClock()
    checker, worker, _flips = _setup(health_check_interval_s=1.0)
    checker.clock = clock
    checker.answers = [True]
    await checker.probe(worker)  # joins: a real probe
    worker.polled = PolledLoad(running=2, at=clock())
    clock.advance(0.5)
    await checker.check_round()  # vouched for: no request (answers is empty, a probe would fail)
    assert worker.healthy
    clock.advance(0.6)  # the poll is older than the interval: probe again
    checker.answers = [False, False]
    await checker.check_round()
    await checker.check_round()
    assert not worker.healthy and checker.answers == []


async def test_a_poll_from_before_a_stall_vouches_for_nothing() -> None:
    """A hung replica's last /metrics answer came before its stream stalled: the round probes it,
    and that failed probe after the stall's strike takes it down."""
    clock = FakeClock()
    checker, worker, flips = _setup(health_check_interval_s=1.0, health_failure_threshold=2)
    checker.clock = clock
    checker.answers = [True]
    await checker.probe(worker)
    worker.polled = PolledLoad(running=2, at=clock())
    clock.advance(0.2)
    checker.answers = [True, False, False]
    checker.report_suspect(worker)  # its own probe answers (the replica is only slow)
    await checker._extra_probes.wait_all()
    assert worker.healthy
    checker.report_suspect(worker)
    await checker.check_round()  # the stall probe and the round's probe both fail
    await checker._extra_probes.wait_all()
    assert not worker.healthy and flips == [True, False] and checker.answers == []



def _health_answer(mode: str) -> web.Response:
    if mode == "gzip-bomb":
        return web.Response(body=gzip.compress(b"0" * (20 * 2**20)), headers={"Content-Encoding": "gzip"})
    if mode == "too-large":
        return web.Response(body=b"0" * (20 * 2**20))
    return web.Response(body=b"\xff\xfe ok" if mode == "not-utf8" else b"")


async def _health_server(mode: str) -> TestServer:
    async def health(request: web.Request) -> web.Response:
        return _health_answer(mode)

    app = web.Application()
    app.router.add_get("/health", health)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.mark.parametrize(("mode", "session", "is_up"), [
    ("gzip-bomb", {}, False),                          # 20 MiB once inflated by the client
    ("too-large", {"auto_decompress": False}, False),  # 20 MiB plain, to the gateway's own session
    ("not-utf8", {}, True),                            # the body is not decoded: the 200 decides
])
async def test_a_health_answer_past_the_cap_is_a_failed_probe(mode: str, session: dict[str, Any],
                                                              is_up: bool) -> None:
    """/health's body is drained capped (http_body), never held whole (was: read whole, and the
    replica up); a good replica probed in the same round is up."""
    servers = [await _health_server(mode), await _health_server("good")]
    try:
        bad, good = (Worker(name, f"http://127.0.0.1:{server.port}", 1.0,
                            CircuitBreaker(BreakerConfig(), FakeClock()))
                     for name, server in zip(("bad", "good"), servers, strict=True))
        probes: dict[str, bool] = {}
        async with aiohttp.ClientSession(**session) as http:
            checker = HealthChecker(HealthConfig(health_check_timeout_s=5.0), http, lambda: [bad, good],
                                    on_change=lambda w, up: None,
                                    on_probe=lambda w, ok: probes.__setitem__(w.id, ok))
            await checker.check_all()
        assert probes == {"bad": is_up, "good": True}
        assert bad.healthy is is_up and good.healthy
    finally:
        for server in servers:
            await server.close()
