"""What one replica asks of a Ray cluster (its bundle), and whether the cluster can ever give it.

Pure: the nodes' resources come in as arguments (read once by `connection.alive_nodes`).

A replica is one process tree that must see all its devices at once (CUDA_VISIBLE_DEVICES), and
a Ray actor takes its resources from one bundle, so each replica's placement group is a single
bundle of TP × PP GPUs (plus its CPUs), or CPUs alone for a replica on the CPU; the group is
STRICT_PACK, so a replica never spans nodes (a bundle never does either).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dpserve.launcher.placement import PlacementError

STRATEGY = "STRICT_PACK"
_SHOWN = ("CPU", "GPU")  # the resources a bundle asks for, in the order messages list them


@dataclass(frozen=True)
class NodeResources:
    """One alive node: its id, address and total logical resources."""

    node_id: str
    ip: str
    total: Mapping[str, float]


def replica_bundle(on_gpu: bool, devices_per_replica: int, cpus: int) -> dict[str, float]:
    """The one bundle of a replica's placement group."""
    bundle = {"CPU": float(cpus)}
    if on_gpu:
        bundle["GPU"] = float(devices_per_replica)
    return bundle


def format_resources(resources: Mapping[str, float]) -> str:
    """{"CPU": 4.0, "GPU": 2.0} → "CPU 4, GPU 2" (the resources bundles ask for; none → "nothing")."""
    parts = [f"{name} {resources[name]:g}" for name in _SHOWN if resources.get(name)]
    return ", ".join(parts) or "nothing"


def describe_nodes(nodes: Sequence[NodeResources]) -> str:
    """ "2 nodes: 1a2b3c4d (10.0.0.1) CPU 8, GPU 4; ..." """
    listed = "; ".join(f"{n.node_id[:8]} ({n.ip}) {format_resources(n.total)}" for n in nodes)
    return f"{len(nodes)} alive node(s){': ' + listed if nodes else ''}"


def bundles_that_fit(node: Mapping[str, float], bundle: Mapping[str, float]) -> int:
    """How many copies of `bundle` fit in `node`'s resources."""
    counts = [math.floor(node.get(name, 0.0) / amount + 1e-9)
              for name, amount in bundle.items() if amount > 0]
    return min(counts) if counts else 0


def check_fits(dp_size: int, bundle: Mapping[str, float], nodes: Sequence[NodeResources]) -> None:
    """Raise PlacementError, stating what is asked and what the cluster has, when the cluster could
    never hold `dp_size` bundles, each on one node, even with nothing else running."""
    capacity = sum(bundles_that_fit(node.total, bundle) for node in nodes)
    if capacity >= dp_size:
        return
    asked = {name: amount * dp_size for name, amount in bundle.items()}
    raise PlacementError(
        f"{dp_size} replicas × {{{format_resources(bundle)}}} ({STRATEGY}: each on one node) = "
        f"{format_resources(asked)} asked, but the Ray cluster can hold {capacity} such replica(s): "
        f"{describe_nodes(nodes)}; lower --dp-size, --tp-size, --pp-size or --ray-cpus-per-replica, "
        f"or add nodes")
