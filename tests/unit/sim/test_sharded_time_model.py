"""The sim's --tp-size/--pp-size time model and its KV capacity from --gpu-memory-gib."""

from __future__ import annotations

import pytest

from dpserve.config import ConfigError
from dpserve.sim.config import SimEngineConfig, TimeModelConfig
from dpserve.sim.time_model import StepShape, TimeModel


def test_defaults_at_tp1_are_host_plus_the_roofline() -> None:
    tm = TimeModel(TimeModelConfig())
    assert tm.step_time_s(StepShape(100, 8, 8000)) == pytest.approx(
        1.5e-3 + 8 * 30e-6 + max(5.5e-3, 100 * 30e-6 + 8 * 30e-6) + 8000 * 44e-9)


def test_tp_shrinks_device_work_and_adds_allreduce() -> None:
    one, two = TimeModel(TimeModelConfig()), TimeModel(TimeModelConfig(tp_size=2))
    shape = StepShape(0, 256, 256 * 1000)
    device_one = max(5.5e-3, 256 * 30e-6) + 256_000 * 44e-9  # roofline of weights and math, KV read
    host = 1.5e-3 + 256 * 30e-6
    # 2 per layer × 32; each a 5 µs launch plus a ring of 2: 2 steps of 0.5 µs, 1× the bytes
    allreduce = 64 * (5e-6 + 2 * 0.5e-6 + 256 * 4096 * 2 / 360e9)
    assert one.step_time_s(shape) == pytest.approx(host + device_one)
    assert two.step_time_s(shape) == pytest.approx(host + device_one / 2 + allreduce)


def test_tp_beyond_the_kv_heads_stops_splitting_kv_reads() -> None:
    shape = StepShape(0, 1, 100_000)
    kv_bound = {tp: TimeModel(TimeModelConfig(tp_size=tp, num_kv_heads=2, step_base_ms=1.5,
                                              decode_seq_us=30)).step_time_s(shape) for tp in (2, 4)}
    read = 100_000 * 44e-9
    assert kv_bound[2] - read / 2 == pytest.approx(kv_bound[4] - read / 2, abs=1e-3)


def test_pp_one_sequence_crosses_every_stage() -> None:
    lone = StepShape(0, 1, 1000)
    one, two = TimeModel(TimeModelConfig()), TimeModel(TimeModelConfig(pp_size=2))
    assert two.step_time_s(lone) == pytest.approx(one.step_time_s(lone) + 10e-6 + 4096 * 2 / 360e9)
    busy = StepShape(0, 128, 128_000)
    assert two.step_time_s(busy) < one.step_time_s(busy)  # two micro-batches overlap


def test_kv_capacity_from_memory() -> None:
    plain = SimEngineConfig()
    assert plain.resolved_kv_cache_tokens == plain.kv_cache_tokens == 400_000
    one = SimEngineConfig(gpu_memory_gib=80)
    two = SimEngineConfig(gpu_memory_gib=80, time=TimeModelConfig(tp_size=2))
    assert one.resolved_kv_cache_tokens == int((80 * 0.9 - 1 - 14.96) * 2**30 // 131_072)
    assert two.resolved_kv_cache_tokens > 2 * one.resolved_kv_cache_tokens
    assert one.num_blocks == one.resolved_kv_cache_tokens // 16
    with pytest.raises(ConfigError, match="the KV room --gpu-memory-gib leaves"):
        SimEngineConfig(gpu_memory_gib=16)


def test_flag_validation() -> None:
    with pytest.raises(ConfigError, match="--tp-size must be >= 1"):
        TimeModelConfig(tp_size=0)
    with pytest.raises(ConfigError, match="exceeds --num-layers"):
        TimeModelConfig(pp_size=64)
