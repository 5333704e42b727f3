"""RaySession: `--ray` from start to end — join the cluster, plan, place every replica, clean up.

`open` (blocking, before the event loop runs) joins the cluster, sizes the bundle from the
backend and parallelism, refuses at once what the cluster could never hold, and places one
group per replica within --startup-timeout-s; any failure removes what was created, leaves the
cluster and raises ConfigError (exit 2). `close` removes every group and actor left and leaves.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass

from dpserve.config import ConfigError
from dpserve.launcher.backends import Backend, ReplicaSpec, get_backend
from dpserve.launcher.config import LaunchConfig
from dpserve.launcher.on_ray import connection
from dpserve.launcher.on_ray.bundles import (
    STRATEGY,
    NodeResources,
    check_fits,
    format_resources,
    replica_bundle,
)
from dpserve.launcher.on_ray.placement_groups import PlacementGroups
from dpserve.launcher.on_ray.runtime import RayRuntime
from dpserve.launcher.placement import Placement, PlacementError
from dpserve.launcher.plan import LaunchPlan, check_parallelism, resolve_model_path

logger = logging.getLogger(__name__)


def wants_gpus(config: LaunchConfig, backend: Backend, nodes: list[NodeResources]) -> bool:
    """GPU bundles when the backend uses devices and GPUs are wanted: --device cuda, or auto and
    the cluster has GPUs (as locally, where auto means "GPUs when any are found")."""
    if not backend.uses_devices or config.device == "cpu":
        return False
    return config.device == "cuda" or connection.cluster_gpus(nodes) > 0


@dataclass
class RaySession:
    deployment_id: str
    plan: LaunchPlan
    runtime: RayRuntime
    groups: PlacementGroups

    @classmethod
    def open(cls, config: LaunchConfig, kv_events: bool = False) -> RaySession:
        """kv_events: each replica publishes KV events on its node (serve's gateway subscribes;
        batch talks to its replicas directly and leaves them off)."""
        connection.require_ray()
        backend = get_backend(config.backend)
        try:
            check_parallelism(config, backend)
        except PlacementError as exc:
            raise ConfigError(str(exc)) from exc
        model_path = resolve_model_path(config.model, backend)
        connection.connect(connection.resolve_address(config.ray_address, os.environ))
        try:
            return cls._place(config, backend, model_path, kv_events)
        except BaseException:
            connection.disconnect()
            raise

    @classmethod
    def _place(cls, config: LaunchConfig, backend: Backend, model_path: str, kv_events: bool) -> RaySession:
        nodes = connection.alive_nodes()
        on_gpu = wants_gpus(config, backend, nodes)
        bundle = replica_bundle(on_gpu, config.devices_per_replica, config.ray_cpus_per_replica)
        try:
            check_fits(config.dp_size, bundle, nodes)
        except PlacementError as exc:
            raise ConfigError(str(exc)) from exc
        deployment_id = secrets.token_hex(4)
        groups = PlacementGroups(f"dpserve-{deployment_id}", bundle)
        plan = ray_plan(config, backend, model_path, bundle, on_gpu)
        logger.info("Ray deployment %s: placing %d replica(s), each {%s} (%s)", deployment_id,
                    config.dp_size, format_resources(bundle), STRATEGY)
        groups.place_all([spec.replica_id for spec in plan.replicas], config.startup_timeout_s)
        runtime = RayRuntime(groups, on_gpu, config.startup_timeout_s, config.replica_grace_s, kv_events)
        return cls(deployment_id, plan, runtime, groups)

    def close(self) -> None:
        """Remove whatever is left of ours (normally nothing) and leave the cluster; Ray also ends
        every actor of this driver's job then."""
        self.groups.remove_all()
        connection.disconnect()


def ray_plan(config: LaunchConfig, backend: Backend, model_path: str, bundle: dict[str, float],
             on_gpu: bool) -> LaunchPlan:
    """One spec per replica with what is known before placement; its node, address, port and
    GPUs are filled in when its actor reports where Ray put it."""
    specs = tuple(
        ReplicaSpec(replica_id=f"r{i}", model=config.model, model_path=model_path, host=config.replica_host,
                    port=0, tp_size=config.tp_size, pp_size=config.pp_size, engine_args=config.engine_argv,
                    placement=_planned_placement(i, on_gpu, config.ray_cpus_per_replica), on_ray=True)
        for i in range(config.dp_size))
    return LaunchPlan(backend, specs, ray_bundle=bundle)


def _planned_placement(index: int, on_gpu: bool, cpus: int) -> Placement:
    """GPU ids are Ray's to assign (known once the actor runs); a CPU replica gets its bundle's CPUs
    as threads (Ray counts CPUs, it pins no cores)."""
    return Placement(index) if on_gpu else Placement(index, num_threads=cpus)
