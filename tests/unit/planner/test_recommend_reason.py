"""The recommendation's reason says only what the predictions show (review_plan finding 12)."""

from __future__ import annotations

import itertools

import pytest

from dpserve.planner.catalog import resolve_arch
from dpserve.planner.hardware import get_gpu
from dpserve.planner.layouts import Layout
from dpserve.planner.plan import Plan, plan_for
from dpserve.planner.predict import Setting
from dpserve.planner.recommend import PlanError, queues
from dpserve.planner.workload import Workload


def _setting(model: str, workload: Workload, *, dtype: str = "bf16", ttft_ms: float | None = None,
             tpot_ms: float | None = None) -> Setting:
    return Setting(resolve_arch(model), get_gpu("H100-80GB"), 8, dtype, "bf16", workload,
                   ttft_slo_s=None if ttft_ms is None else ttft_ms / 1e3,
                   tpot_slo_s=None if tpot_ms is None else tpot_ms / 1e3)


def _plan(s: Setting, n: int = 8) -> Plan:
    return plan_for(s, n)


def test_the_default_example_is_not_called_kv_bound() -> None:
    """`dpserve plan --model llama-3.1-8b`: one-GPU replicas run 8 of their 318 slots, nothing
    queues; TP=4 wins because a batch-8 step is bound by memory reads, which TP splits."""
    rec = _plan(_setting("llama-3.1-8b", Workload(1024, 256, concurrency=64))).recommendation
    assert rec.prediction.layout == Layout(2, 4, 1)
    assert rec.regime == "latency-bound" and "queues" not in rec.reason
    assert "DP8×TP1×PP1 replica runs 8.0 sequences" in rec.reason and "TP=4 splits that read" in rec.reason


def test_queues_closed_and_open_loop() -> None:
    closed = _setting("qwen3-32b", Workload(1024, 256, concurrency=150))
    preds = {p.layout.label: p for p in _plan(closed, 2).predictions}
    assert queues(closed, preds["DP2×TP1×PP1"])  # 75 in flight per replica, 9 slots
    assert not queues(closed, preds["DP1×TP1×PP2"])  # 150 in flight, 214 slots
    flood = _setting("llama-3.1-8b", Workload(1024, 256, request_rate=1e6))
    assert all(queues(flood, p) for p in _plan(flood).ranked)  # overloaded
    light = _setting("llama-3.1-8b", Workload(1024, 256, request_rate=1.0))
    assert not any(queues(light, p) for p in _plan(light).ranked)


@pytest.mark.parametrize(("model", "n", "workload"), [
    ("llama-3.1-8b", 8, Workload(1024, 256, concurrency=64)),
    ("llama-3.1-8b", 8, Workload(1024, 256, concurrency=4096)),
    ("llama-3.1-70b", 8, Workload(2048, 32, concurrency=4)),
    ("llama-3.1-70b", 8, Workload(1024, 256, concurrency=64)),
    ("qwen3-32b", 2, Workload(1024, 256, concurrency=150)),
    ("qwen3-32b", 4, Workload(1024, 256, request_rate=2.0)),
    ("qwen3-14b", 4, Workload(4096, 256, concurrency=600)),
])
def test_kv_bound_only_when_the_smaller_layout_queues(model: str, n: int, workload: Workload) -> None:
    s = _setting(model, workload)
    plan = _plan(s, n)
    rec = plan.recommendation
    if rec.regime == "kv-bound":
        smallest = min(p.layout.gpus_per_replica for p in plan.ranked)
        small = next(p for p in plan.ranked if p.layout.gpus_per_replica == smallest)
        assert small.slots < rec.prediction.slots, rec.reason
        # "KV-bound at capacity" claims fewer slots at the most load within the SLOs, not a queue now
        assert queues(s, small) or "KV-bound at capacity" in rec.reason, rec.reason
    assert "within the SLOs" not in rec.reason


def test_no_layout_meets_the_slos_says_so_first() -> None:
    """70B FP8 on 8 GPUs with a 1 ms TPOT objective: every layout misses it."""
    plan = _plan(_setting("llama-3.1-70b", Workload(1024, 256, concurrency=64), dtype="fp8", tpot_ms=1.0))
    assert not any(p.slo_met for p in plan.ranked)
    reason = plan.recommendation.reason
    assert reason.startswith("no layout meets the SLOs (TPOT p99 ≤ 1 ms: the lowest predicted is 13.4 ms, "
                             "DP2×TP4×PP1); ranked by throughput instead, the best is DP2×TP4×PP1: ")
    assert "within the SLOs" not in reason


def test_each_slo_met_by_some_layout_but_none_meets_both() -> None:
    plan = _plan(_setting("llama-3.1-70b", Workload(1024, 256, concurrency=64), dtype="fp8", ttft_ms=50.0,
                          tpot_ms=14.0))
    assert not any(p.slo_met for p in plan.ranked)
    assert plan.recommendation.reason.startswith("no layout meets the SLOs (some layouts meet the TTFT "
                                                 "objective and some the TPOT one, none both)")


def test_every_layout_overloaded() -> None:
    plan = _plan(_setting("llama-3.1-8b", Workload(1024, 256, request_rate=1e6)))
    assert plan.recommendation.reason.startswith(
        "no layout keeps up with 1e+06 req/s: every one is overloaded; ranked by throughput instead, "
        "the best is DP8×TP1×PP1: ")


def test_met_slos_keep_the_label_first() -> None:
    rec = _plan(_setting("llama-3.1-70b", Workload(1024, 256, concurrency=64), dtype="fp8",
                         tpot_ms=50.0)).recommendation
    assert rec.prediction.slo_met and rec.reason.startswith(rec.prediction.layout.label + ": ")


@pytest.mark.parametrize(("dtype", "suggestion"), [("bf16", "(--dtype fp8/int4)"), ("fp8", "(--dtype int4)"),
                                                   ("int4", None)])
def test_nothing_fits_suggests_only_a_smaller_dtype(dtype: str, suggestion: str | None) -> None:
    with pytest.raises(PlanError) as info:
        _plan(_setting("llama-3.1-405b", Workload(1024, 256, concurrency=1), dtype=dtype), 1)
    message = str(info.value)
    assert (suggestion in message) if suggestion else "quantize" not in message


def test_reason_words_hold_over_a_grid() -> None:
    """Whatever the regime, a reason never claims what its own predictions contradict."""
    for model, conc in itertools.product(("llama-3.1-8b", "qwen3-14b"), (1, 16, 64, 512)):
        s = _setting(model, Workload(1024, 256, concurrency=conc))
        plan = _plan(s)
        rec = plan.recommendation
        if "queues" in rec.reason:
            assert rec.regime == "kv-bound"
            smallest = min(p.layout.gpus_per_replica for p in plan.ranked)
            assert queues(s, next(p for p in plan.ranked if p.layout.gpus_per_replica == smallest))
