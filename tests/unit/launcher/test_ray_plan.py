"""--ray without a cluster: flags, address resolution, the plan, and a replica's spec once placed."""

from __future__ import annotations

import pytest

from dpserve.config import ConfigError
from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.kv_events.config import parse_kv_events_config
from dpserve.kv_events.publisher import is_bind_endpoint
from dpserve.launcher.backends import get_backend
from dpserve.launcher.config import LaunchConfig
from dpserve.launcher.on_ray.bundles import NodeResources
from dpserve.launcher.on_ray.connection import resolve_address
from dpserve.launcher.on_ray.runtime import placed_spec
from dpserve.launcher.on_ray.session import ray_plan, wants_gpus
from dpserve.offline.replicas import ReplicaPool

GPU_NODES = [NodeResources("n1", "10.0.0.1", {"CPU": 8.0, "GPU": 4.0})]
CPU_NODES = [NodeResources("n2", "10.0.0.2", {"CPU": 8.0})]


def test_address_is_the_flag_else_the_environment_else_a_local_instance() -> None:
    assert resolve_address("10.0.0.1:6379", {"RAY_ADDRESS": "x:1"}) == "10.0.0.1:6379"
    assert resolve_address(None, {"RAY_ADDRESS": "x:1"}) == "x:1"
    assert resolve_address(None, {}) == "local"


def test_ray_flags_are_validated() -> None:
    with pytest.raises(ConfigError, match="--ray-address needs --ray"):
        LaunchConfig(ray_address="10.0.0.1:6379")
    with pytest.raises(ConfigError, match="--gpu-ids cannot be combined with --ray"):
        LaunchConfig(ray=True, gpu_ids=("0",))
    with pytest.raises(ConfigError, match="--ray-cpus-per-replica must be >= 1"):
        LaunchConfig(ray=True, ray_cpus_per_replica=0)


@pytest.mark.parametrize(("backend", "device", "nodes", "expected"), [
    ("vllm", "auto", GPU_NODES, True),
    ("vllm", "auto", CPU_NODES, False),
    ("vllm", "cpu", GPU_NODES, False),
    ("builtin", "cuda", CPU_NODES, True),  # then the fits check says the cluster has no GPU
    ("sim", "cuda", GPU_NODES, False),  # the simulator never takes devices
])
def test_gpu_bundles_follow_the_device_flag_and_the_cluster(
        backend: str, device: str, nodes: list[NodeResources], expected: bool) -> None:
    config = LaunchConfig(backend=backend, device=device, ray=True)  # type: ignore[arg-type]
    assert wants_gpus(config, get_backend(backend), nodes) is expected


def test_the_plan_states_replicas_tp_pp_and_the_bundle() -> None:
    config = LaunchConfig(backend="vllm", model="org/m", dp_size=3, tp_size=2, pp_size=2, ray=True)
    plan = ray_plan(config, get_backend("vllm"), "org/m", {"CPU": 1.0, "GPU": 4.0}, on_gpu=True)
    assert plan.layout() == "3 replicas × TP 2 × PP 2 = 12 GPUs"
    assert "r2: placed by Ray, bundle {CPU 1, GPU 4} (STRICT_PACK)" in plan.describe()
    assert all(s.on_ray and s.pp_size == 2 for s in plan.replicas)


def test_a_placed_replica_gets_its_node_address_port_gpus_and_python() -> None:
    config = LaunchConfig(backend="vllm", model="org/m", dp_size=1, tp_size=2, ray=True)
    backend = get_backend("vllm")
    spec = ray_plan(config, backend, "org/m", {"CPU": 1.0, "GPU": 2.0}, on_gpu=True).replicas[0]
    placed = placed_spec(spec, {"ip": "10.0.0.7", "port": 41000, "gpu_ids": ["3", "5"],
                                "python": "/opt/venv/bin/python", "node_id": "n", "kv_events_ports": None},
                         on_gpu=True)
    assert placed.url == "http://10.0.0.7:41000"
    assert backend.env(placed) == {"CUDA_VISIBLE_DEVICES": "3,5"}
    argv = backend.command(placed)
    assert argv[0] == "/opt/venv/bin/python" and argv[-2:] == ["--distributed-executor-backend", "mp"]
    assert placed.kv_events is None and "--kv-events-config" not in argv


def test_a_placed_replica_publishes_kv_events_on_tcp_of_its_node() -> None:
    """The gateway may be on another machine: PUB on tcp://*:P (what vLLM binds), replay on the
    node's address, both ports the actor reserved there; the gateway connects to NODE_IP."""
    config = LaunchConfig(backend="vllm", model="org/m", dp_size=1, ray=True, engine_args="--x 1")
    backend = get_backend("vllm")
    spec = ray_plan(config, backend, "org/m", {"CPU": 1.0, "GPU": 1.0}, on_gpu=True).replicas[0]
    placed = placed_spec(spec, {"ip": "10.0.0.7", "port": 41000, "gpu_ids": ["0"], "python": "/py",
                                "node_id": "n", "kv_events_ports": [41001, 41002]}, on_gpu=True)
    assert placed.kv_events == KvEventsEndpoint("tcp://10.0.0.7:41001", "tcp://10.0.0.7:41002")
    argv = backend.command(placed)
    flag = parse_kv_events_config(argv[argv.index("--kv-events-config") + 1])
    assert flag is not None and flag.is_publishing
    assert flag.endpoint == "tcp://*:41001" and is_bind_endpoint(flag.endpoint)
    assert flag.replay_endpoint == "tcp://10.0.0.7:41002"
    assert argv[-2:] == ["--x", "1"]  # a --kv-events-config in --engine-args still wins
    ipv6 = placed_spec(spec, {"ip": "fd00::7", "port": 1, "gpu_ids": [], "python": "/py", "node_id": "n",
                              "kv_events_ports": [2, 3]}, on_gpu=False)
    assert ipv6.kv_events == KvEventsEndpoint("tcp://[fd00::7]:2", "tcp://[fd00::7]:3")


def test_a_cpu_replica_on_ray_runs_as_many_threads_as_its_bundle_has_cpus() -> None:
    config = LaunchConfig(dp_size=1, ray=True, ray_cpus_per_replica=3)
    spec = ray_plan(config, get_backend("builtin"), "smollm2-135m", {"CPU": 3.0}, on_gpu=False).replicas[0]
    argv = get_backend("builtin").command(spec)
    assert argv[argv.index("--num-threads") + 1] == "3" and argv[argv.index("--device") + 1] == "cpu"


def test_a_batch_replica_that_moved_is_used_at_its_new_url_once_probed() -> None:
    pool = ReplicaPool(["http://10.0.0.1:1", "http://10.0.0.2:2"], clock=lambda: 0.0)
    pool.set_url("r1", "http://10.0.0.3:3/")
    assert pool.replicas[1].url == "http://10.0.0.3:3" and not pool.replicas[1].is_healthy
    pool.set_url("r0", "http://10.0.0.1:1")  # same address: nothing changes
    assert pool.replicas[0].is_healthy


def test_an_address_nothing_answers_on_is_an_error_at_once() -> None:
    import socket

    from dpserve.launcher.on_ray.connection import check_reachable

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
            check_reachable(f"127.0.0.1:{port}")
    check_reachable("local")  # nothing to check: Ray starts it
