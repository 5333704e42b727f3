"""The planner against the published data points of issue #19: direction and rough size, with the
tolerance each assertion states. Where our model disagrees with a published number, the test says so."""

from __future__ import annotations

import dataclasses

import pytest

from dpserve.planner.catalog import resolve_arch
from dpserve.planner.formulas import Assumptions
from dpserve.planner.hardware import get_gpu
from dpserve.planner.layouts import Layout
from dpserve.planner.plan import plan_for
from dpserve.planner.predict import Setting, predict
from dpserve.planner.workload import Workload

H100 = get_gpu("H100-80GB")
# vLLM ≤ 0.5: its v0.6.0 release blog measured 62% of an 8B/H100 step off the GPU (API server 33%,
# scheduling 29%); ~100 µs of host work per running sequence per step reproduces that share.
VLLM_05_HOST = Assumptions(host_seq_s=100e-6)


def _harbor(layout: Layout, asm: Assumptions = Assumptions()) -> float:
    """70B (FP8) on H100s, chat-length requests (ShareGPT-like: 256 in, 256 out), P99 TTFT ≤ 1 s:
    fleet output tokens/s at the highest Poisson load that meets it."""
    s = Setting(resolve_arch("llama-3.1-70b"), H100, 4, "fp8", "bf16", Workload(256, 256, request_rate=1.0),
                ttft_slo_s=1.0, assumptions=asm)
    p = predict(s, layout)
    assert p.fits
    return p.capacity_tok_s


def test_harbor_two_tp2_replicas_beat_one_tp2_and_one_tp4() -> None:
    """Published: DP=2×TP=2 gave ~1.9× one TP=2 replica at the same P95 TTFT; TP=4 "would have cut
    single-user latency but not added throughput"."""
    dp2tp2, tp2, tp4 = (_harbor(Layout(2, 2, 1)), _harbor(Layout(1, 2, 1)), _harbor(Layout(1, 4, 1)))
    assert 1.6 <= dp2tp2 / tp2 <= 2.05
    # Our default engine (vLLM V1-era host costs): two TP=2 replicas beat one TP=4 by ≥ 20%
    # (measured 1.28×): TP=4 pays more all-reduce and keeps one scheduler's host work per step.
    assert dp2tp2 / tp4 >= 1.2
    # With the host costs of vLLM ≤ 0.5 (the data point's era) the gap reaches the issue's ≥ 1.4×.
    ratio_v05 = _harbor(Layout(2, 2, 1), VLLM_05_HOST) / _harbor(Layout(1, 4, 1), VLLM_05_HOST)
    assert ratio_v05 >= 1.4
    # ... and TP=4 does cut single-user latency
    s = Setting(resolve_arch("llama-3.1-70b"), H100, 4, "fp8", "bf16", Workload(256, 256, concurrency=1))
    step = {lay.tp: predict(s, lay).decode_step_s for lay in (Layout(2, 2, 1), Layout(1, 4, 1))}
    assert step[4] is not None and step[2] is not None and step[4] < 0.75 * step[2]


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_405b_shards_within_a_replica_before_dp(dtype: str) -> None:
    """405B on 16 H100s (two nodes): BF16 needs all 16 in one replica; FP8 fits in 8, and the plan
    still fills a replica with TP/PP (8 GPUs) before adding a second one."""
    s = Setting(resolve_arch("llama-3.1-405b"), H100, 8, dtype, "bf16", Workload(1024, 256, concurrency=64))
    plan = plan_for(s, 16)
    rec = plan.recommendation
    smallest_fitting = min(p.layout.gpus_per_replica for p in plan.ranked)
    assert rec.regime == "shard-bound"
    assert rec.prediction.layout.gpus_per_replica == smallest_fitting == (16 if dtype == "bf16" else 8)
    assert "TP/PP before DP" in rec.reason


def test_8b_on_8_gpus_at_high_concurrency_is_eight_replicas() -> None:
    s = Setting(resolve_arch("llama-3.1-8b"), H100, 8, "bf16", "bf16", Workload(512, 256, concurrency=1024))
    rec = plan_for(s, 8).recommendation
    assert dataclasses.astuple(rec.prediction.layout) == (8, 1, 1, False)
    assert rec.regime == "replica-bound"


def test_deepseek_v3_dp_attention_has_about_tp_times_the_kv_room() -> None:
    """MLA's single latent is duplicated on every TP GPU; DP-attention keeps it once per sequence.
    Published: ~8× at TP=8. Ours: 0.7-1.0 × TP (DP-attention also keeps a full copy of the attention
    weights on each GPU, which costs some of the room)."""
    s = Setting(resolve_arch("deepseek-v3"), get_gpu("H200"), 8, "fp8", "bf16",
                Workload(2048, 512, concurrency=64))
    plain, dpa = predict(s, Layout(1, 8, 1)), predict(s, Layout(1, 8, 1, dp_attention=True))
    assert plain.memory is not None and dpa.memory is not None
    assert 0.7 * 8 <= dpa.memory.kv_tokens / plain.memory.kv_tokens <= 8


def test_qwen3_tp_has_the_best_latency_and_pp_cuts_ttft_p99_when_dp_is_kv_starved() -> None:
    """Published (Qwen3-14B/32B): TP gave the best latency (~3× TTFT); PP cut TTFT p99 2.5-3× at high
    concurrency through a larger total KV cache. Ours on H100: TP's TTFT is ~1.8× better (direction
    only); PP's cut is far larger than 3× because one H100 holds Qwen3-32B with room for just 10
    sequences of 1,280 tokens. Not reproduced: "DP added ~50% throughput at 120-180" — we predict
    DP ≈ TP ≈ PP within 10% for Qwen3-14B on 2 H100s at 150."""
    low = Setting(resolve_arch("qwen3-14b"), H100, 8, "bf16", "bf16", Workload(1024, 256, concurrency=1))
    ttft = {p.layout.label: p.load.ttft_p50_s for p in plan_for(low, 2).ranked if p.load}
    assert min(ttft, key=ttft.__getitem__) == "DP1×TP2×PP1"
    assert ttft["DP2×TP1×PP1"] / ttft["DP1×TP2×PP1"] >= 1.5
    high = Setting(resolve_arch("qwen3-32b"), H100, 8, "bf16", "bf16", Workload(1024, 256, concurrency=150))
    dp, pp = predict(high, Layout(2, 1, 1)), predict(high, Layout(1, 1, 2))
    assert dp.load is not None and pp.load is not None and dp.memory and pp.memory
    assert pp.memory.kv_tokens >= 10 * dp.memory.kv_tokens
    assert pp.load.ttft_p99_s * 2.5 <= dp.load.ttft_p99_s
