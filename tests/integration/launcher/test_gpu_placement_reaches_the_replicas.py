"""GPU placement without GPUs: replicas are real processes, started with the computed
CUDA_VISIBLE_DEVICES (the sim ignores it, so no GPU is needed to check what each one got)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from dpserve.launcher.backends.sim import SimBackend
from dpserve.launcher.config import LaunchConfig
from dpserve.launcher.placement import place_on_gpus
from dpserve.launcher.plan import LaunchPlan, build_plan
from dpserve.launcher.ports import PortAllocator
from dpserve.launcher.service import GatewaySite, ServeService
from tests.integration.launcher.fake_gateway import FakeGateway

pytestmark = pytest.mark.timeout(60)


class _DeviceSim(SimBackend):
    uses_devices = True


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


async def test_each_replica_process_sees_only_its_tp_group(tmp_path: Path) -> None:
    launch = LaunchConfig(backend="sim", dp_size=2, tp_size=2, stagger_s=0.0, echo_replica_logs=False)
    ports = PortAllocator(launch.replica_host, tmp_path / "locks")
    sim_plan = build_plan(launch, [ports.reserve(), ports.reserve()])
    placements = place_on_gpus(2, 2, ["4", "5", "6", "7"])
    plan = LaunchPlan(_DeviceSim(), tuple(dataclasses.replace(spec, placement=p)
                                          for spec, p in zip(sim_plan.replicas, placements, strict=True)))
    gateway = FakeGateway()
    service = ServeService(launch, plan, GatewaySite(gateway.app(), "127.0.0.1", 0, 1.0), tmp_path / "logs")
    run = asyncio.create_task(service.run())
    try:
        for _ in range(600):
            if len(gateway.workers) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(gateway.workers) == 2
        seen = {}
        for sup in service.supervisors:
            assert sup.pid is not None
            env = _environ(sup.pid)
            seen[sup.replica_id] = env["CUDA_VISIBLE_DEVICES"]
    finally:
        service.request_stop()
        await run
        ports.release_all()
    assert seen == {"r0": "4,5", "r1": "6,7"}
