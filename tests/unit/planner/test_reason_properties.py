"""Every claim in a recommendation's reason holds in its own plan's table (review_plan2 finding 3):
the review's random sweep, as fixed cases (each one a reason the sweep found false) and checks."""

from __future__ import annotations

import re

import pytest

from dpserve.planner.catalog import resolve_arch
from dpserve.planner.hardware import get_gpu
from dpserve.planner.layouts import Layout
from dpserve.planner.plan import Plan, plan_for
from dpserve.planner.predict import Prediction, Setting, predict
from dpserve.planner.recommend import queues
from dpserve.planner.workload import Workload

# (model, gpu, GPUs, GPUs per node, dtype, workload, TTFT SLO ms, TPOT SLO ms)
Case = tuple[str, str, int, int, str, Workload, float | None, float | None]
CASES: list[Case] = [
    ("qwen3-32b", "H100-80GB", 4, 8, "bf16", Workload(1024, 256, request_rate=2.0), None, None),  # 3a: 512
    ("mixtral-8x7b", "H100-80GB", 4, 8, "fp8", Workload(128, 1024, concurrency=1), None, None),  # 3a: batch 0
    ("qwen3-14b", "L40S", 2, 8, "bf16", Workload(4096, 1024, request_rate=5.0), None, None),  # 3b: inf > inf
    ("llama-3.1-70b", "H100-80GB", 12, 4, "bf16", Workload(1024, 256, concurrency=64), None, None),  # 3c
    ("qwen3-14b", "H200", 8, 8, "fp8", Workload(4096, 32, concurrency=8), None, None),  # TPOT 4.9 vs 4.9 ms
    ("qwen3-32b", "A100-80GB", 2, 8, "fp8", Workload(4096, 256, concurrency=64), None, 20),  # 289 vs 289
    ("llama-3.1-70b", "H100-80GB", 4, 8, "fp8", Workload(4096, 1024, request_rate=20.0), 5000, 100),  # 2836
    ("mixtral-8x7b", "L40S", 8, 8, "fp8", Workload(128, 1024, request_rate=20.0), 1000, 20),  # TPOT not lower
    ("llama-3.1-8b", "L40S", 4, 8, "bf16", Workload(128, 1024, request_rate=2.0), None, 30),  # cap: TPOT
    ("llama-3.1-8b", "L40S", 12, 8, "fp8", Workload(4096, 32, concurrency=8), 1000, None),  # TTFT alone
]


def _plan(case: Case) -> Plan:
    model, gpu, n, per_node, dtype, workload, ttft_ms, tpot_ms = case
    s = Setting(resolve_arch(model), get_gpu(gpu), per_node, dtype, "bf16", workload,
                ttft_slo_s=None if ttft_ms is None else ttft_ms / 1e3,
                tpot_slo_s=None if tpot_ms is None else tpot_ms / 1e3)
    return plan_for(s, n)


def _smallest_fitting_replica(s: Setting, below: int) -> int | None:
    """Any TP × PP replica below `below` GPUs that fits, listed or not."""
    for size in range(1, below):
        for tp in (t for t in range(1, size + 1) if size % t == 0 and t <= s.gpus_per_node):
            if predict(s, Layout(1, tp, size // tp)).fits:
                return size
    return None


def _pairs(pattern: str, text: str) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in re.findall(pattern, text)]


def check_reason(plan: Plan) -> None:
    """The claims a reason can make, each checked against the predictions it came from."""
    s, rec, best = plan.setting, plan.recommendation, plan.recommendation.prediction
    reason, size = rec.reason, best.layout.gpus_per_replica
    smallest = min(p.layout.gpus_per_replica for p in plan.ranked)
    small: Prediction = next(p for p in plan.ranked if p.layout.gpus_per_replica == smallest)
    assert re.search(r"batch 0 per replica", reason) is None, reason
    if rec.regime == "shard-bound" or "shard-bound" in reason:
        assert size == smallest, reason  # never shard-bound when a smaller replica fits
    if f"need {size} GPUs per replica" in reason:
        assert _smallest_fitting_replica(s, size) is None, reason
    for mine, theirs in _pairs(r"serve (\d+) tok/s vs (\d+)", reason):
        assert mine > theirs, reason
    for mine, theirs in _pairs(r"capacity[^:]*: (\d+) tok/s vs (\d+)", reason):
        assert mine > theirs, reason
    for mine, theirs in _pairs(r"(?:TTFT|TPOT) p(?:50|99) ([\d.]+) ms vs ([\d.]+) ms", reason):
        assert mine < theirs, reason
    if "queues" in reason:
        assert queues(s, small), reason
    if rec.regime == "kv-bound":
        assert small.slots < best.slots, reason
    for theirs, mine in _pairs(r"\((\d+) in all vs (\d+)\)", reason):
        assert theirs < mine, reason
    if rec.regime == "latency-bound":
        assert best.load and small.load and best.load.tpot_p50_s < small.load.tpot_p50_s, reason
    if "every layout serves the offered load" in reason:
        assert all(p.load and not p.load.overloaded for p in plan.ranked), reason
    if "within the SLOs" in reason:
        assert best.slo_met, reason


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_every_claim_of_the_reason_holds(case: Case) -> None:
    check_reason(_plan(case))


def test_a_tie_names_the_capacity_that_broke_it() -> None:
    """qwen3-32b on 4 H100s at 2 req/s: every layout serves the 512 tok/s offered; DP2×TP1×PP2 wins
    on capacity, which DP4×TP1×PP1's 9 sequences per replica limit (review 3a)."""
    rec = _plan(CASES[0]).recommendation
    assert rec.prediction.layout == Layout(2, 1, 2) and rec.regime == "kv-bound"
    assert rec.reason.startswith("DP2×TP1×PP2: KV-bound at capacity — every layout serves the offered load "
                                 "(512 tok/s); DP2×TP1×PP2 has the most capacity: 5267 tok/s vs 1469 for "
                                 "DP4×TP1×PP1, whose replicas hold only 9 sequences each")


def test_a_light_load_prints_its_fraction_of_a_batch() -> None:
    assert "batch 0.5 per replica" in _plan(CASES[1]).recommendation.reason


def test_replicas_that_must_tile_the_nodes_are_not_what_the_weights_need() -> None:
    """70B BF16 fits on 3 GPUs, but a 3-GPU replica would straddle 4-GPU nodes (review 3c)."""
    rec = _plan(CASES[3]).recommendation
    assert rec.regime == "shard-bound" and rec.prediction.layout.gpus_per_replica == 4
    assert ("fit with KV room on 3 GPUs, but the smallest replica that fits and tiles the 4-GPU nodes is "
            "4 GPUs") in rec.reason
