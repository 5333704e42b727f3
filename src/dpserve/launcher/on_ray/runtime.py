"""RayRuntime: each start of a replica = its placement group (placed by Ray) + a ReplicaActor on it.

A start asks the actor where it landed (node, address, GPUs, a free port — and, with KV events,
the ports of its PUB and replay sockets, reserved on that node), builds the backend's command for
that spot (the same code as a local replica), and has the actor run it. An end —
the process exits, the actor dies, its node leaves — is seen through the actor call that waits
for the exit; stopping kills the actor and removes the group, so a restart is placed afresh,
on another node if its node is gone. Restarts follow dpserve's own restart policy (the actor's
`max_restarts` stays 0), exactly as for local replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from dpserve.aio import wait_for
from dpserve.launcher.backends import Backend, ReplicaSpec
from dpserve.launcher.kv_events import node_kv_events, with_kv_events
from dpserve.launcher.local_runtime import describe_exit_code
from dpserve.launcher.logs import ReplicaLog
from dpserve.launcher.on_ray.placement_groups import PlacementGroups
from dpserve.launcher.placement import Placement
from dpserve.launcher.runtime import ReplicaRuntime, RunningReplica, StartError

logger = logging.getLogger(__name__)

_OUTPUT_WAIT_S = 1.0  # one read_output call waits this long for a line
_CALL_TIMEOUT_S = 30.0  # an actor call that should answer at once


class RayReplica(RunningReplica):
    """A replica process run by its actor on some node; its end seen through `wait_exit`."""

    def __init__(self, spec: ReplicaSpec, argv: list[str], env: dict[str, str], pid: int, node_id: str,
                 actor: Any, group: Any, groups: PlacementGroups, log: ReplicaLog) -> None:
        self.spec, self.argv, self.env, self.pid = spec, argv, env, pid
        self.node_id = node_id
        self._actor, self._group, self._groups = actor, group, groups
        self._code: int | None = None
        self._lost: str | None = None
        self._stopped = False
        self._exit = asyncio.create_task(self._wait_exit())
        self._pump = asyncio.create_task(self._pump_output(log))

    def describe(self) -> str:
        return f"pid {self.pid} on node {self.node_id} ({self.spec.host})"

    @property
    def ended(self) -> bool:
        return self._exit.done()

    def outcome(self) -> str:
        if self._lost is not None:
            return f"its Ray actor is gone: {self._lost}"
        return describe_exit_code(self._code)

    async def wait(self) -> None:
        await asyncio.shield(self._exit)

    async def _wait_exit(self) -> None:
        from ray.exceptions import RayError

        try:
            self._code = await self._actor.wait_exit.remote()
        except RayError as exc:  # the actor died, or its node left the cluster
            self._lost = _first_line(exc)

    async def _pump_output(self, log: ReplicaLog) -> None:
        from ray.exceptions import RayError

        while True:
            try:
                lines, ended = await self._actor.read_output.remote(_OUTPUT_WAIT_S)
            except RayError:
                return
            for line in lines:
                log.write_line(line)
            if ended:
                return

    async def serves_its_port(self) -> bool | None:
        from ray.exceptions import RayError

        try:
            answer: bool | None = await wait_for(self._actor.serves_its_port.remote(), _CALL_TIMEOUT_S)
        except (RayError, TimeoutError):
            return None
        return answer

    async def stop(self, grace_s: float) -> None:
        """Stop the process through the actor (SIGTERM, grace, SIGKILL), then kill the actor and
        remove its placement group."""
        if self._stopped:
            await asyncio.gather(self._exit, self._pump, return_exceptions=True)
            return
        self._stopped = True
        import ray
        from ray.exceptions import RayError

        if not self._exit.done():
            with contextlib.suppress(RayError, TimeoutError):
                await wait_for(self._actor.stop.remote(grace_s), grace_s + _CALL_TIMEOUT_S)
        with contextlib.suppress(TimeoutError):  # the last lines, then the end
            await wait_for(asyncio.gather(self._pump, self._exit, return_exceptions=True), 5.0)
        self._pump.cancel()
        with contextlib.suppress(RayError, ValueError):
            ray.kill(self._actor, no_restart=True)
        self._groups.remove(self._group)
        await asyncio.gather(self._exit, self._pump, return_exceptions=True)


class RayRuntime(ReplicaRuntime):
    """Starts replicas as ReplicaActors, each on its own placement group."""

    def __init__(self, groups: PlacementGroups, on_gpu: bool, startup_timeout_s: float,
                 grace_s: float, kv_events: bool = False) -> None:
        self._groups = groups
        self._on_gpu = on_gpu
        self._kv_events = kv_events  # each replica publishes KV events on its node
        self._startup_timeout_s = startup_timeout_s
        self._grace_s = grace_s
        self._actor_class: Any = None
        self._starts = 0

    async def start(self, spec: ReplicaSpec, backend: Backend, log: ReplicaLog) -> RunningReplica:
        group = await self._groups.take_or_place(spec.replica_id, self._startup_timeout_s)
        actor = self._create_actor(spec.replica_id, group)
        try:
            return await self._start_on(actor, group, spec, backend, log)
        except BaseException:
            self._discard(actor, group)
            raise

    async def _start_on(self, actor: Any, group: Any, spec: ReplicaSpec, backend: Backend,
                        log: ReplicaLog) -> RayReplica:
        from ray.exceptions import RayError

        try:
            where = await wait_for(actor.where.remote(self._kv_events), self._startup_timeout_s)
            placed = placed_spec(spec, where, self._on_gpu)
            argv, env = backend.command(placed), backend.env(placed)
            pid = await wait_for(actor.start.remote(argv, env), _CALL_TIMEOUT_S)
        except (RayError, TimeoutError) as exc:
            raise StartError(f"its Ray actor could not start it: {_first_line(exc)}") from exc
        return RayReplica(placed, argv, env, pid, str(where["node_id"])[:8], actor, group, self._groups, log)

    def _create_actor(self, replica_id: str, group: Any) -> Any:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self._starts += 1
        bundle = self._groups.bundle
        strategy = PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=0)
        return self._remote_class().options(
            name=f"{self._groups.prefix}-{replica_id}-{self._starts}", num_cpus=bundle.get("CPU", 0.0),
            num_gpus=bundle.get("GPU", 0.0), scheduling_strategy=strategy, max_restarts=0,
            max_concurrency=16,
        ).remote(min(self._grace_s, 5.0))

    def _remote_class(self) -> Any:
        if self._actor_class is None:
            import ray

            from dpserve.launcher.on_ray.replica_actor import ReplicaActor

            self._actor_class = ray.remote(ReplicaActor)
        return self._actor_class

    def _discard(self, actor: Any, group: Any) -> None:
        import ray
        from ray.exceptions import RayError

        with contextlib.suppress(RayError, ValueError):
            ray.kill(actor, no_restart=True)
        self._groups.remove(group)


def placed_spec(spec: ReplicaSpec, where: Mapping[str, Any], on_gpu: bool) -> ReplicaSpec:
    """The planned spec made concrete from the actor's `where`: the node's address, the port and
    GPUs it got, its Python, and where it publishes KV events when the actor reserved their ports."""
    placement = (Placement(spec.placement.index, gpu_ids=tuple(str(g) for g in where["gpu_ids"]))
                 if on_gpu else spec.placement)
    ip = str(where["ip"])
    placed = dataclasses.replace(spec, host=ip, port=int(where["port"]), python=str(where["python"]),
                                 placement=placement, on_ray=True)
    kv_ports = where.get("kv_events_ports")
    if kv_ports is None:
        return placed
    pub_port, replay_port = kv_ports
    return with_kv_events(placed, *node_kv_events(ip, int(pub_port), int(replay_port)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
