"""--ray placement arithmetic: a replica's bundle, and whether a cluster could ever hold the fleet."""

from __future__ import annotations

import pytest

from dpserve.launcher.on_ray.bundles import (
    NodeResources,
    bundles_that_fit,
    check_fits,
    describe_nodes,
    format_resources,
    replica_bundle,
)
from dpserve.launcher.placement import PlacementError

GPU_NODE = NodeResources("a" * 56, "10.0.0.1", {"CPU": 16.0, "GPU": 8.0, "memory": 1e11})
CPU_NODE = NodeResources("b" * 56, "10.0.0.2", {"CPU": 4.0})


def test_a_gpu_replica_asks_tp_times_pp_gpus_in_one_bundle() -> None:
    assert replica_bundle(on_gpu=True, devices_per_replica=8, cpus=1) == {"CPU": 1.0, "GPU": 8.0}
    assert replica_bundle(on_gpu=False, devices_per_replica=8, cpus=3) == {"CPU": 3.0}


@pytest.mark.parametrize(("node", "bundle", "fits"), [
    ({"CPU": 16.0, "GPU": 8.0}, {"CPU": 1.0, "GPU": 4.0}, 2),  # GPUs are the limit
    ({"CPU": 3.0, "GPU": 8.0}, {"CPU": 2.0, "GPU": 1.0}, 1),  # CPUs are the limit
    ({"CPU": 4.0}, {"CPU": 1.0, "GPU": 1.0}, 0),  # no GPU at all
    ({"CPU": 0.3 * 10}, {"CPU": 0.3}, 10),  # float sums do not lose one
])
def test_bundles_that_fit_in_a_node(node: dict[str, float], bundle: dict[str, float], fits: int) -> None:
    assert bundles_that_fit(node, bundle) == fits


def test_a_fleet_that_fits_across_nodes_passes() -> None:
    check_fits(5, {"CPU": 1.0}, [GPU_NODE, CPU_NODE])  # CPU replicas may use the GPU node's CPUs
    check_fits(2, {"CPU": 1.0, "GPU": 4.0}, [GPU_NODE, CPU_NODE])


def test_too_much_is_an_error_stating_what_is_asked_and_what_the_cluster_has() -> None:
    with pytest.raises(PlacementError) as info:
        check_fits(3, {"CPU": 1.0, "GPU": 4.0}, [GPU_NODE, CPU_NODE])
    assert str(info.value).startswith(
        "3 replicas × {CPU 1, GPU 4} (STRICT_PACK: each on one node) = CPU 3, GPU 12 asked, but the Ray "
        "cluster can hold 2 such replica(s): 2 alive node(s): aaaaaaaa (10.0.0.1) CPU 16, GPU 8; "
        "bbbbbbbb (10.0.0.2) CPU 4; lower --dp-size")


def test_a_replica_never_spans_nodes_even_when_the_sum_would_do() -> None:
    halves = [NodeResources("c" * 56, "10.0.0.3", {"CPU": 8.0, "GPU": 2.0})] * 2
    with pytest.raises(PlacementError, match="can hold 0 such replica"):
        check_fits(1, {"CPU": 1.0, "GPU": 4.0}, halves)


def test_descriptions() -> None:
    assert format_resources({"GPU": 2.0, "CPU": 0.5, "memory": 9.0}) == "CPU 0.5, GPU 2"
    assert format_resources({}) == "nothing"
    assert describe_nodes([]) == "0 alive node(s)"
