"""Layout enumeration, structural rules, ranking and the regime words."""

from __future__ import annotations

import itertools

import pytest

from dpserve.planner.architecture import arch_from_hf_config
from dpserve.planner.catalog import BUILTIN_CONFIGS, resolve_arch
from dpserve.planner.hardware import get_gpu
from dpserve.planner.layouts import Layout, enumerate_layouts, layout_problem
from dpserve.planner.plan import Plan, plan_for
from dpserve.planner.predict import Setting
from dpserve.planner.recommend import PlanError
from dpserve.planner.workload import Workload

H100 = get_gpu("H100-80GB")


def test_every_split_of_the_gpus_tp_inside_a_node() -> None:
    dense = enumerate_layouts(8, 8, resolve_arch("llama-3.1-8b"))
    assert len(dense) == 10 and all(lay.num_gpus == 8 for lay in dense)
    assert len(set(dense)) == len(dense) and not any(lay.dp_attention for lay in dense)
    two_nodes = enumerate_layouts(16, 8, resolve_arch("llama-3.1-8b"))
    assert max(lay.tp for lay in two_nodes) == 8 and Layout(1, 8, 2) in two_nodes
    moe = enumerate_layouts(8, 8, resolve_arch("deepseek-v3"))
    assert Layout(1, 8, 1, dp_attention=True) in moe and Layout(8, 1, 1, dp_attention=True) not in moe


def test_structural_problems() -> None:
    smol = resolve_arch("smollm2-135m")  # 9 heads, 3 KV heads, 30 layers
    assert "does not divide the 9 attention heads" in str(layout_problem(smol, Layout(1, 2, 1)))
    assert layout_problem(smol, Layout(1, 3, 1)) is None
    assert "exceeds the 30 layers" in str(layout_problem(smol, Layout(1, 1, 32)))


def _plan(model: str, n: int, workload: Workload, gpu: str = "H100-80GB", dtype: str = "bf16") -> Plan:
    return plan_for(Setting(resolve_arch(model), get_gpu(gpu), 8, dtype, "bf16", workload), n)


def test_latency_bound_at_low_concurrency_prefers_tp() -> None:
    rec = _plan("llama-3.1-70b", 8, Workload(2048, 32, concurrency=4)).recommendation
    assert rec.prediction.layout == Layout(1, 8, 1)
    assert rec.regime == "latency-bound" and "TP=8 splits that read" in rec.reason


def test_kv_bound_when_one_gpu_replicas_hold_too_few_sequences() -> None:
    rec = _plan("qwen3-32b", 2, Workload(1024, 256, concurrency=150)).recommendation
    assert rec.prediction.layout.dp == 1 and rec.regime == "kv-bound"
    assert "holds only 9 sequences per replica" in rec.reason


def test_reason_names_the_step_bound() -> None:
    rec = _plan("llama-3.1-8b", 8, Workload(512, 256, concurrency=8)).recommendation
    assert "-bound at batch" in rec.reason and "ms per step" in rec.reason


def test_ranking_meets_slo_first_then_throughput() -> None:
    plan = _plan("llama-3.1-8b", 8, Workload(512, 256, concurrency=1024))
    ranked = plan.ranked
    assert all(a.slo_met >= b.slo_met for a, b in itertools.pairwise(ranked))
    assert ranked[0].output_tok_s == max(p.output_tok_s for p in ranked)
    unfit = [p for p in plan.predictions if not p.fits]
    assert not unfit and len(ranked) == len(plan.predictions)


def test_nothing_fits_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match=r"no layout of llama-3\.1-405b fits on 1 × H100-80GB.*quantize"):
        _plan("llama-3.1-405b", 1, Workload(1024, 256, concurrency=1))


# 48 heads and 6 KV heads: TP of 3 and 6 divide them, so only the node rule rules them out
H48 = arch_from_hf_config({**BUILTIN_CONFIGS["llama-3.1-8b"], "hidden_size": 6144, "num_attention_heads": 48,
                           "num_key_value_heads": 6}, "h48")


@pytest.mark.parametrize(("num_gpus", "gpus_per_node", "tps", "replica_sizes"), [
    # three 4-GPU nodes: TP=3 would put GPUs 3-5 on two nodes, a 3-GPU replica too; a replica
    # larger than a node spans whole TP groups (6 = TP2 × PP3 over 1.5 nodes)
    (12, 4, {1, 2, 4}, {1, 2, 4, 6, 12}),
    # 1.5 nodes of 8 (the last node partial): the groups that tile 8 GPUs
    (12, 8, {1, 2, 4}, {1, 2, 4, 12}),
    # all in one node: any split
    (6, 8, {1, 2, 3, 6}, {1, 2, 3, 6}),
    (16, 8, {1, 2, 4, 8}, {1, 2, 4, 8, 16}),
])
def test_tp_groups_and_small_replicas_tile_the_nodes(num_gpus: int, gpus_per_node: int, tps: set[int],
                                                     replica_sizes: set[int]) -> None:
    layouts = enumerate_layouts(num_gpus, gpus_per_node, H48)
    assert {lay.tp for lay in layouts} == tps
    assert {lay.gpus_per_replica for lay in layouts} == replica_sizes
