"""ServeService with sim replicas and a recording gateway: join on health, rejoin after a kill,
give up after --max-restarts, and leave no process behind on stop."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from dpserve.launcher.config import LaunchConfig
from dpserve.launcher.gateway_link import GatewayLink
from dpserve.launcher.plan import build_plan
from dpserve.launcher.ports import PortAllocator
from dpserve.launcher.service import GatewaySite, ServeService
from dpserve.launcher.supervisor import ReplicaState
from tests.integration.launcher.fake_gateway import FakeGateway

pytestmark = pytest.mark.timeout(120)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _until(predicate, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _service(tmp_path: Path, gateway: FakeGateway, python: str | None = None,
             **overrides: object) -> tuple[ServeService, PortAllocator]:
    launch = LaunchConfig(**{"backend": "sim", "dp_size": 2, "stagger_s": 0.0, "restart_backoff_s": 0.1,
                             "replica_grace_s": 3.0, "echo_replica_logs": False, **overrides})  # type: ignore[arg-type]
    ports = PortAllocator(launch.replica_host, tmp_path / "locks")
    plan = build_plan(launch, [ports.reserve() for _ in range(launch.dp_size)])
    if python is not None:
        plan = dataclasses.replace(plan, replicas=tuple(dataclasses.replace(spec, python=python)
                                                        for spec in plan.replicas))
    site = GatewaySite(gateway.app(), "127.0.0.1", 0, drain_s=1.0)
    return ServeService(launch, plan, site, tmp_path / "logs"), ports


async def test_replicas_join_then_rejoin_after_being_killed(tmp_path: Path) -> None:
    gateway = FakeGateway()
    service, ports = _service(tmp_path, gateway, write_prometheus_config=tmp_path / "prometheus.yml")
    run = asyncio.create_task(service.run())
    try:
        await _until(lambda: len(gateway.workers) == 2)
        urls = sorted(gateway.workers.values())
        victim = service.supervisors[0]
        old_pid = victim.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        await _until(lambda: victim.pid != old_pid and len(gateway.workers) == 2)
        assert sorted(gateway.workers.values()) == urls  # same port after the restart
        assert ("remove", victim.spec.url) in gateway.events
        assert victim.restarts == 1
        # The dashboard's replica names and restart counts come with each join.
        assert {"url": victim.spec.url, "name": "r0", "restarts": 1} in gateway.added
        assert {"url": victim.spec.url, "name": "r0", "restarts": 0} in gateway.added
        scrape = yaml.safe_load((tmp_path / "prometheus.yml").read_text())["scrape_configs"]
        assert [t for c in scrape[1]["static_configs"] for t in c["targets"]] == \
            [s.spec.url.removeprefix("http://") for s in service.supervisors]
        pids = [s.pid for s in service.supervisors]
    finally:
        service.request_stop()
        code = await run
        ports.release_all()
    assert code == 0
    assert not any(_alive(pid) for pid in pids if pid is not None)
    assert (tmp_path / "logs" / "r0.log").read_text().count("restarting in") == 1


async def test_staggered_replicas_start_one_after_another_and_serve_as_soon_as_one_is_up(
        tmp_path: Path) -> None:
    gateway = FakeGateway()
    service, ports = _service(tmp_path, gateway, stagger_s=30.0)
    run = asyncio.create_task(service.run())
    try:
        await _until(lambda: len(gateway.workers) == 1)
        first, second = service.supervisors
        assert first.state is ReplicaState.READY and second.state is ReplicaState.PENDING
        assert second.pid is None
    finally:
        service.request_stop()
        assert await run == 0
        ports.release_all()


async def test_a_wedged_replica_is_killed_and_restarted(tmp_path: Path) -> None:
    gateway = FakeGateway()
    service, ports = _service(tmp_path, gateway, dp_size=1, liveness_timeout_s=1.0, replica_grace_s=1.0)
    run = asyncio.create_task(service.run())
    try:
        await _until(lambda: len(gateway.workers) == 1)
        sup = service.supervisors[0]
        wedged = sup.pid
        assert wedged is not None
        os.kill(wedged, signal.SIGSTOP)  # alive, but answers nothing
        await _until(lambda: sup.pid != wedged and len(gateway.workers) == 1)
        assert sup.restarts == 1 and not _alive(wedged)
        assert "/health unanswered for 1s" in (tmp_path / "logs" / "r0.log").read_text()
    finally:
        service.request_stop()
        await run
        ports.release_all()


async def test_a_replica_that_keeps_failing_is_given_up_with_its_log_tail(tmp_path: Path) -> None:
    gateway = FakeGateway()
    service, ports = _service(tmp_path, gateway, dp_size=1, max_restarts=1,
                              engine_args="--no-such-flag")
    try:
        code = await asyncio.wait_for(service.run(), timeout=60)
    finally:
        ports.release_all()
    assert code == 1
    sup = service.supervisors[0]
    assert sup.state is ReplicaState.GAVE_UP and sup.restarts == 1
    assert gateway.events == []
    assert "no-such-flag" in sup.log.tail()


async def test_a_replica_not_healthy_in_time_is_reported_with_its_log_tail(tmp_path: Path) -> None:
    gateway = FakeGateway()
    # No replica can start in 10 ms, so this exercises the timeout path deterministically.
    service, ports = _service(tmp_path, gateway, dp_size=1, max_restarts=0, startup_timeout_s=0.01)
    try:
        code = await asyncio.wait_for(service.run(), timeout=60)
    finally:
        ports.release_all()
    assert code == 1
    problem = service.supervisors[0].last_problem
    assert problem is not None and "not healthy after 0.01s" in problem and "r0.log" in problem


async def test_link_recovers_the_worker_id_when_the_url_is_already_listed() -> None:
    gateway = FakeGateway()
    async with TestServer(gateway.app(), host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        base = str(server.make_url("")).rstrip("/")
        assert await GatewayLink(base, http).add("r0", "http://127.0.0.1:1")
        fresh = GatewayLink(base, http)  # knows nothing of the earlier registration
        assert await fresh.add("r0", "http://127.0.0.1:1")
        assert fresh.worker_id("r0") == "w0"
        await fresh.remove("r0")
    assert gateway.workers == {}


async def test_a_replica_that_cannot_even_be_spawned_is_given_up(tmp_path: Path) -> None:
    gateway = FakeGateway()
    missing = str(tmp_path / "no-python")
    service, ports = _service(tmp_path, gateway, python=missing, dp_size=1, max_restarts=1)
    try:
        code = await asyncio.wait_for(service.run(), timeout=30)
    finally:
        ports.release_all()
    sup = service.supervisors[0]
    assert code == 1 and sup.state is ReplicaState.GAVE_UP
    assert sup.last_problem is not None and "could not start" in sup.last_problem


async def test_a_foreign_server_on_the_replica_port_is_never_taken_for_the_replica(tmp_path: Path) -> None:
    gateway = FakeGateway()
    service, ports = _service(tmp_path, gateway, dp_size=1, max_restarts=0, startup_timeout_s=3.0)
    impostor = web.Application()
    impostor.router.add_get("/health", lambda request: web.Response(text="ok"))
    port = service.fleet.plan.replicas[0].port
    async with TestServer(impostor, host="127.0.0.1", port=port):  # took the port first
        try:
            code = await asyncio.wait_for(service.run(), timeout=30)
        finally:
            ports.release_all()
    assert code == 1 and gateway.events == []
