"""Backend command lines and environments, built from ReplicaSpecs (nothing is started)."""

from __future__ import annotations

import dataclasses

import pytest

from dpserve.launcher.backends import BACKEND_NAMES, ReplicaSpec, get_backend
from dpserve.launcher.placement import Placement


def _spec(placement: Placement, *, tp_size: int = 1, engine_args: tuple[str, ...] = ()) -> ReplicaSpec:
    return ReplicaSpec(replica_id="r1", model="org/model", model_path="/models/model", host="127.0.0.1",
                       port=41234, tp_size=tp_size, placement=placement, engine_args=engine_args,
                       python="/py")


GPU_PAIR = Placement(1, gpu_ids=("2", "3"))


def test_registry_lists_every_backend_and_rejects_unknown() -> None:
    assert set(BACKEND_NAMES) == {"builtin", "vllm", "sglang", "sim"}
    assert all(get_backend(name).name == name for name in BACKEND_NAMES)
    with pytest.raises(ValueError, match="valid: builtin, vllm, sglang, sim"):
        get_backend("tgi")


def test_vllm_command_line() -> None:
    spec = _spec(GPU_PAIR, tp_size=2, engine_args=("--max-model-len", "4096"))
    backend = get_backend("vllm")
    assert backend.command(spec) == [
        "/py", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/model",
        "--served-model-name", "org/model", "--tensor-parallel-size", "2", "--pipeline-parallel-size", "1",
        "--host", "127.0.0.1", "--port", "41234",
        "--disable-access-log-for-endpoints", "/health,/metrics",  # the gateway's polls: no access lines
        "--max-model-len", "4096"]
    assert backend.env(spec) == {"CUDA_VISIBLE_DEVICES": "2,3"}


def test_vllm_pipeline_stages_and_its_executor_inside_a_ray_actor() -> None:
    spec = dataclasses.replace(_spec(GPU_PAIR), pp_size=2, on_ray=True, engine_args=("--x", "1"))
    argv = get_backend("vllm").command(spec)
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "2"
    assert argv[-4:] == ["--distributed-executor-backend", "mp", "--x", "1"]  # engine args can override
    assert "--distributed-executor-backend" not in get_backend("vllm").command(_spec(GPU_PAIR))


def test_sglang_command_line() -> None:
    spec = _spec(GPU_PAIR, tp_size=2, engine_args=("--mem-fraction-static", "0.8"))
    assert get_backend("sglang").command(spec) == [
        "/py", "-m", "sglang.launch_server", "--model-path", "/models/model",
        "--served-model-name", "org/model", "--tp", "2", "--pipeline-parallel-size", "1",
        "--host", "127.0.0.1", "--port", "41234", "--log-level-http", "warning",
        "--mem-fraction-static", "0.8"]


@pytest.mark.parametrize("name", ["vllm", "sglang"])
def test_the_replica_api_key_is_the_engines_api_key_and_never_shown(name: str) -> None:
    """serve --replica-api-key K: the gateway sends `Bearer K`, so the engine must ask for K (both
    take --api-key); --engine-args still come last. Logs show the command with the key masked."""
    spec = dataclasses.replace(_spec(GPU_PAIR, engine_args=("--x", "1")), api_key="s3cret key")
    argv = get_backend(name).command(spec)
    assert argv[-4:] == ["--api-key", "s3cret key", "--x", "1"]
    assert "--api-key" not in get_backend(name).command(_spec(GPU_PAIR))
    shown = spec.shown(argv)
    assert "s3cret" not in shown and shown.endswith("--api-key '***' --x 1")
    assert "s3cret" not in repr(spec)


@pytest.mark.parametrize("name", ["builtin", "sim"])
def test_engines_without_keys_get_no_key_flag(name: str) -> None:
    spec = dataclasses.replace(_spec(Placement(0, cpu_cores=(0,), num_threads=1)), api_key="k")
    assert "--api-key" not in get_backend(name).command(spec)


def test_builtin_on_cpu_passes_thread_count_and_limits_threads_in_env() -> None:
    spec = _spec(Placement(0, cpu_cores=(0,), num_threads=1), engine_args=("--max-num-seqs", "8"))
    backend = get_backend("builtin")
    assert backend.command(spec) == [
        "/py", "-m", "dpserve", "engine", "--model", "/models/model", "--served-model-name", "org/model",
        "--host", "127.0.0.1", "--port", "41234", "--device", "cpu", "--num-threads", "1",
        "--max-num-seqs", "8"]
    assert backend.env(spec)["OMP_NUM_THREADS"] == "1"


def test_builtin_on_gpu_uses_cuda() -> None:
    argv = get_backend("builtin").command(_spec(Placement(0, gpu_ids=("5",))))
    assert argv[argv.index("--device") + 1] == "cuda"
    assert "--num-threads" not in argv


def test_sim_command_line_uses_the_model_name() -> None:
    argv = get_backend("sim").command(_spec(Placement(0, cpu_cores=(0,), num_threads=1),
                                            engine_args=("--time-scale", "10")))
    assert argv == ["/py", "-m", "dpserve", "sim", "--model", "org/model", "--host", "127.0.0.1",
                    "--port", "41234", "--time-scale", "10"]
    assert not get_backend("sim").uses_devices


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_the_gateways_body_limit_reaches_the_replicas_that_take_it(name: str) -> None:
    """serve's --max-request-bytes: a body the gateway lets through must not be 413 at a builtin or
    sim replica; engine args still override it; vLLM and SGLang have no such flag."""
    spec = dataclasses.replace(_spec(Placement(0)), max_request_bytes=16 * 1024 * 1024,
                               engine_args=("--x", "1"))
    argv = get_backend(name).command(spec)
    if name in ("builtin", "sim"):
        assert argv[-4:] == ["--max-request-bytes", str(16 * 1024 * 1024), "--x", "1"]
    else:
        assert "--max-request-bytes" not in argv
    assert "--max-request-bytes" not in get_backend(name).command(_spec(Placement(0)))
