"""Joining the Ray cluster as its driver, and what the cluster has (the only calls to ray.init/nodes).

This process is the driver of a Ray job: every actor and placement group it creates is tied to
it (none is detached), so Ray removes them when it disconnects or dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import signal
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from dpserve.config import ConfigError
from dpserve.launcher.on_ray.bundles import NodeResources

logger = logging.getLogger(__name__)

NAMESPACE = "dpserve"  # Ray namespace of our actors; their names also carry the deployment id
LOCAL = "local"  # ray.init's address for "start a new local instance"


def resolve_address(flag: str | None, environ: Mapping[str, str]) -> str:
    """--ray-address, else $RAY_ADDRESS, else a new local Ray instance."""
    return flag or environ.get("RAY_ADDRESS") or LOCAL


def require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--ray needs Ray in this Python: pip install 'dpserve[ray]' "
                          "(and the same on every node of the cluster)")


def connect(address: str) -> None:
    """ray.init as the driver. Replica output reaches us through the actors (not Ray's log
    forwarding), so each line keeps its replica id."""
    import ray

    check_reachable(address)
    try:
        with _ctrl_c_blocked_for_children(address == LOCAL):
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, include_dashboard=False,
                     logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address}: {exc}") from exc
    logger.info("joined Ray cluster %s (%s)", address if address != LOCAL else "(new local instance)",
                ray.get_runtime_context().get_node_id()[:8])


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT that nothing answers on is an error at once: ray.init would retry it for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "local", "auto", ray:// — Ray resolves those itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
                          f"`ray start --head`, or give its GCS address with --ray-address") from exc


@contextlib.contextmanager
def _ctrl_c_blocked_for_children(starting_local_instance: bool) -> Iterator[None]:
    """A local instance's GCS and raylet are our children, in our process group: Ctrl-C at the
    terminal would reach them with us and take the cluster down under our orderly shutdown.
    They inherit the signal mask, so SIGINT is blocked while ray.init starts them (ray.shutdown
    still ends them with SIGTERM; replicas unblock it again when spawned)."""
    if not starting_local_instance:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def alive_nodes() -> list[NodeResources]:
    import ray

    return [NodeResources(str(n["NodeID"]), str(n["NodeManagerAddress"]), _floats(n.get("Resources", {})))
            for n in ray.nodes() if n.get("Alive")]


def available_resources() -> dict[str, float]:
    import ray

    return _floats(ray.available_resources())


def cluster_gpus(nodes: list[NodeResources]) -> float:
    return sum(n.total.get("GPU", 0.0) for n in nodes)


def _floats(resources: Mapping[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in resources.items()}
