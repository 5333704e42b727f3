"""stop() ends a supervisor at once, even while its runtime is still starting the replica (on Ray a
start may wait for room in the cluster up to --startup-timeout-s)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dpserve.launcher.backends import Backend, ReplicaSpec, get_backend
from dpserve.launcher.logs import ReplicaLog
from dpserve.launcher.placement import Placement
from dpserve.launcher.restart_policy import RestartPolicy
from dpserve.launcher.runtime import ReplicaRuntime, RunningReplica
from dpserve.launcher.supervisor import ReplicaState, ReplicaSupervisor, SupervisionTimes


class NeverPlaced(ReplicaRuntime):
    """A start that waits forever (a placement group Ray cannot place)."""

    def __init__(self) -> None:
        self.cancelled = False

    async def start(self, spec: ReplicaSpec, backend: Backend, log: ReplicaLog) -> RunningReplica:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


async def _noop(sup: ReplicaSupervisor) -> None:
    return None


async def test_stop_abandons_a_start_that_is_still_waiting(tmp_path: Path) -> None:
    runtime = NeverPlaced()
    spec = ReplicaSpec("r0", "m", "m", "127.0.0.1", 1, 1, Placement(0))
    sup = ReplicaSupervisor(spec, get_backend("sim"), ReplicaLog("r0", tmp_path / "r0.log", None),
                            RestartPolicy(1, 60.0, 0.1, 1.0), SupervisionTimes(600.0, 0.1, 1.0),
                            http=None, runtime=runtime, on_ready=_noop, on_down=_noop)  # type: ignore[arg-type]
    run = asyncio.create_task(sup.run())
    await asyncio.sleep(0.05)
    assert sup.state is ReplicaState.STARTING
    await sup.stop()
    await asyncio.wait_for(run, timeout=2.0)
    assert runtime.cancelled and sup.state is ReplicaState.STOPPED and sup.instance is None
