"""A layout handed to the sim steps exactly as the plan predicted it."""

from __future__ import annotations

import pytest

from dpserve.config import parse_config
from dpserve.planner.catalog import resolve_arch
from dpserve.planner.formulas import step_time_s
from dpserve.planner.hardware import get_gpu
from dpserve.planner.layouts import Layout
from dpserve.planner.predict import Setting, predict
from dpserve.planner.sim_profile import sim_flags
from dpserve.planner.workload import Workload
from dpserve.sim.config import SimConfig
from dpserve.sim.time_model import StepShape, TimeModel


@pytest.mark.parametrize(("model", "layout"), [
    ("llama-3.1-8b", Layout(2, 2, 2)), ("llama-3.1-70b", Layout(1, 4, 2)), ("qwen3-32b", Layout(1, 8, 1)),
])
def test_sim_step_equals_the_predicted_step(model: str, layout: Layout) -> None:
    s = Setting(resolve_arch(model), get_gpu("H100-80GB"), 8, "bf16", "bf16",
                Workload(512, 128, concurrency=32))
    p = predict(s, layout)
    assert p.fits and p.costs is not None and p.memory is not None
    config, _ = parse_config(SimConfig, sim_flags(s, p, time_scale=3.0), "dpserve sim")
    sim = TimeModel(config.engine.time)
    assert _close(sim.costs, p.costs)
    for shape in (StepShape(0, 1, 600), StepShape(300, 40, 40_000), StepShape(4096, 0, 0)):
        expected = step_time_s(p.costs, shape.num_prefill_tokens, shape.num_decode_seqs,
                               shape.num_context_tokens)
        assert sim.step_time_s(shape) == pytest.approx(expected, rel=1e-9)
        assert sim.wall_time_s(shape) == pytest.approx(expected / 3.0, rel=1e-9)
    assert config.engine.resolved_kv_cache_tokens == p.memory.kv_tokens
    # vLLM V1's limits on an H100
    assert (config.engine.max_num_seqs, config.engine.max_num_batched_tokens) == (1024, 8192)


def _close(a: object, b: object) -> bool:
    return all(getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-9) for k in vars(a))


def test_dp_attention_is_not_simulated() -> None:
    s = Setting(resolve_arch("deepseek-v3"), get_gpu("H200"), 8, "fp8", "bf16",
                Workload(512, 128, concurrency=32))
    p = predict(s, Layout(1, 8, 1, dp_attention=True))
    with pytest.raises(ValueError, match="DP-attention"):
        sim_flags(s, p, 1.0)
