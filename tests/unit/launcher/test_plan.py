"""The launch plan: placement chosen per backend and device, errors stated as config errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dpserve.config import ConfigError
from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.launcher.config import LaunchConfig
from dpserve.launcher.plan import build_plan


def test_builtin_on_cpu_splits_the_cores_and_uses_the_reserved_ports() -> None:
    plan = build_plan(LaunchConfig(), [5001, 5002], gpu_ids=(), cpu_cores=(0, 1))
    assert [(s.replica_id, s.port, s.placement.cpu_cores) for s in plan.replicas] == [
        ("r0", 5001, (0,)), ("r1", 5002, (1,))]
    assert "r1: http://127.0.0.1:5002  CPU cores 1 (1 threads)" in plan.describe()


def test_gpus_found_are_used_for_device_backends() -> None:
    config = LaunchConfig(backend="vllm", model="org/m", dp_size=2, tp_size=2)
    plan = build_plan(config, [1, 2], gpu_ids=("0", "1", "2", "3"), cpu_cores=(0,))
    assert [s.placement.env()["CUDA_VISIBLE_DEVICES"] for s in plan.replicas] == ["0,1", "2,3"]
    assert plan.replicas[0].model_path == "org/m"  # a hub id passes through unresolved


def test_explicit_gpu_ids_win_over_the_detected_ones() -> None:
    config = LaunchConfig(backend="sglang", model="org/m", dp_size=1, gpu_ids=("6",))
    plan = build_plan(config, [1], gpu_ids=("0", "1"), cpu_cores=(0,))
    assert plan.replicas[0].placement.gpu_ids == ("6",)


def test_too_few_gpus_is_a_config_error_with_the_arithmetic() -> None:
    config = LaunchConfig(backend="vllm", model="org/m", dp_size=4, tp_size=2)
    with pytest.raises(ConfigError, match=r"4 replicas × TP 2 × PP 1 = 8 GPUs needed, but 2 available"):
        build_plan(config, [1, 2, 3, 4], gpu_ids=("0", "1"), cpu_cores=(0,))


def test_with_device_auto_the_error_also_suggests_the_cpu() -> None:
    with pytest.raises(ConfigError, match=r"2 GPUs needed, but 1 available.*or --device cpu"):
        build_plan(LaunchConfig(), [1, 2], gpu_ids=("0",), cpu_cores=(0, 1))


def test_the_simulator_never_takes_gpus() -> None:
    plan = build_plan(LaunchConfig(backend="sim", dp_size=3), [1, 2, 3], gpu_ids=("0",), cpu_cores=(0, 1))
    assert not any(s.placement.on_gpu for s in plan.replicas)


def test_device_cpu_ignores_gpus_and_device_cuda_requires_them() -> None:
    plan = build_plan(LaunchConfig(device="cpu"), [1, 2], gpu_ids=("0", "1"), cpu_cores=(0, 1))
    assert not any(s.placement.on_gpu for s in plan.replicas)
    with pytest.raises(ConfigError, match="no CUDA devices"):
        build_plan(LaunchConfig(device="cuda"), [1, 2], gpu_ids=(), cpu_cores=(0, 1))


def test_builtin_refuses_tensor_parallelism() -> None:
    with pytest.raises(ConfigError, match="runs --tp-size 1 at most"):
        build_plan(LaunchConfig(tp_size=2, dp_size=1), [1], gpu_ids=("0", "1"), cpu_cores=(0,))


def test_pipeline_stages_multiply_the_devices_of_a_replica() -> None:
    config = LaunchConfig(backend="vllm", model="org/m", dp_size=2, tp_size=2, pp_size=2)
    plan = build_plan(config, [1, 2], gpu_ids=tuple(map(str, range(8))), cpu_cores=(0,))
    assert [s.placement.gpu_ids for s in plan.replicas] == [("0", "1", "2", "3"), ("4", "5", "6", "7")]
    assert plan.replicas[0].pp_size == 2
    assert plan.layout() == "2 replicas × TP 2 × PP 2 = 8 GPUs"
    with pytest.raises(ConfigError, match=r"3 replicas × TP 2 × PP 2 = 12 GPUs needed, but 8 available"):
        build_plan(dataclasses.replace(config, dp_size=3), [1, 2, 3], gpu_ids=tuple(map(str, range(8))),
                   cpu_cores=(0,))


def test_builtin_refuses_pipeline_parallelism() -> None:
    with pytest.raises(ConfigError, match="the builtin backend runs --pp-size 1 at most, got 2"):
        build_plan(LaunchConfig(pp_size=2, dp_size=1), [1], gpu_ids=("0", "1"), cpu_cores=(0,))


def test_unknown_model_for_builtin_is_an_error_before_launch() -> None:
    with pytest.raises(ConfigError, match=r"no-such-model.*smollm2-135m"):
        build_plan(LaunchConfig(model="no-such-model"), [1, 2], gpu_ids=(), cpu_cores=(0, 1))


def test_the_replica_api_key_and_body_limit_reach_every_replica_spec() -> None:
    plan = build_plan(LaunchConfig(), [5001, 5002], gpu_ids=(), cpu_cores=(0, 1))
    assert plan.with_api_key(None) is plan
    assert [s.api_key for s in plan.with_api_key("k").replicas] == ["k", "k"]
    assert [s.max_request_bytes for s in plan.with_max_request_bytes(4096).replicas] == [4096, 4096]


def test_local_replicas_publish_kv_events_on_ipc_and_a_loopback_replay_port(tmp_path: Path) -> None:
    plan = build_plan(LaunchConfig(backend="sim", dp_size=1), [5001], cpu_cores=(0,), kv_event_ports=[5002],
                      socket_dir=tmp_path)
    [spec] = plan.replicas
    assert spec.kv_events == KvEventsEndpoint(f"ipc://{tmp_path}/kv-events-5002.pub", "tcp://127.0.0.1:5002")
    assert spec.engine_args[0] == "--kv-events-config"
