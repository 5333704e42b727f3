"""One layout's predictions: does it fit, how fast is a step, what does the offered load get."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dpserve.planner import formulas as f
from dpserve.planner.architecture import ModelArch
from dpserve.planner.hardware import GpuSpec
from dpserve.planner.layouts import Layout, layout_problem
from dpserve.planner.workload import Workload


class PredictionError(ArithmeticError):
    """A prediction came out non-finite or non-positive: inputs beyond what the model is made for
    (their bounds should keep this from happening; the check keeps NaN out of the ranking and JSON)."""


@dataclass(frozen=True)
class Setting:
    """Everything a prediction depends on besides the layout."""

    arch: ModelArch
    gpu: GpuSpec
    gpus_per_node: int
    dtype: str
    kv_dtype: str
    workload: Workload
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None
    assumptions: f.Assumptions = f.Assumptions()

    @property
    def weight_bytes(self) -> float:
        return f.WEIGHT_BYTES[self.dtype]

    @property
    def kv_bytes(self) -> float:
        return f.KV_BYTES[self.kv_dtype]


@dataclass(frozen=True)
class Prediction:
    layout: Layout
    fits: bool
    why_not: str | None
    memory: f.Memory | None
    max_seqs: int  # sequences of prompt+output tokens the replica's KV holds at once
    slots: int  # running-batch cap: min(max-num-seqs per scheduler, max_seqs)
    costs: f.StepCosts | None
    decode_step_s: float | None  # one sequence alone, mean context
    prefill_s: float | None  # one prompt alone
    load: f.LoadPoint | None  # per replica at the offered load
    parts: f.StepParts | None  # a steady step at that load, by what bounds it
    capacity_tok_s: float  # fleet output tokens/s at the highest Poisson load that meets the SLOs
    slo_met: bool

    @property
    def output_tok_s(self) -> float:
        return self.load.output_tok_s * self.layout.dp if self.load else 0.0

    @property
    def bound(self) -> str | None:
        if self.parts is None:
            return None
        return "memory" if self.parts.memory_s >= self.parts.compute_s else "compute"


def step_costs(s: Setting, layout: Layout) -> f.StepCosts:
    a, asm = s.arch, s.assumptions
    full = f.replica_costs(a, s.gpu, s.weight_bytes, s.kv_bytes, asm, s.dtype)
    replicated = 0.0
    if layout.dp_attention:
        hbm = s.gpu.hbm_gb_s * 1e9 * asm.hbm_efficiency
        replicated = f.param_counts(a).attention * s.weight_bytes / hbm
    links = f.layout_links(s.gpu, layout.tp, layout.pp, s.gpus_per_node, asm)
    return f.shard_costs(full, tp=layout.tp, pp=layout.pp, num_layers=a.num_layers, hidden_size=a.hidden_size,
                         kv_split=f.kv_shards(a, layout.tp, layout.dp_attention), links=links,
                         replicated_weights_s=replicated)


def predict(s: Setting, layout: Layout) -> Prediction:
    problem = layout_problem(s.arch, layout)
    if problem is not None:
        return _unfit(layout, problem, None)
    mem = f.memory_budget(s.arch, s.gpu, layout.tp, layout.pp, layout.dp_attention, s.weight_bytes,
                          s.kv_bytes, s.assumptions)
    shape = s.workload.shape
    max_seqs = mem.kv_tokens // shape.seq_tokens
    if max_seqs < 1:
        return _unfit(layout, _no_room(s, mem), mem)
    max_num_seqs, max_tokens = f.engine_limits(s.assumptions, s.gpu)
    schedulers = layout.tp if layout.dp_attention else 1  # DP-attention: one scheduler per attention rank
    slots = min(max_num_seqs * schedulers, max_seqs)
    costs = step_costs(s, layout)
    budget = max_tokens * schedulers
    load = _at_load(s, layout, costs, slots, budget)
    per_replica = f.capacity_rate(costs, slots, shape, budget, s.ttft_slo_s, s.tpot_slo_s)
    return _checked(Prediction(
        layout, True, None, mem, max_seqs, slots, costs,
        decode_step_s=f.step_time_s(costs, 0, 1, shape.mean_context),
        prefill_s=f.prefill_s(costs, shape, 0, budget),
        load=load, parts=f.steady_parts(costs, load.batch, shape, budget),
        capacity_tok_s=per_replica * shape.output_len * layout.dp,
        slo_met=f.meets_slo(load, s.ttft_slo_s, s.tpot_slo_s)))


def _checked(p: Prediction) -> Prediction:
    """PredictionError unless every figure of a fitting layout is finite and positive (TTFT may be
    unbounded when the replica is overloaded; a load point may be idle)."""
    assert p.memory is not None and p.load is not None
    load = p.load
    positive = {"weights per GPU": p.memory.weights_bytes, "decode step": p.decode_step_s,
                "prefill": p.prefill_s, "TPOT p50": load.tpot_p50_s, "TPOT p99": load.tpot_p99_s}
    if not load.overloaded:
        positive |= {"TTFT p50": load.ttft_p50_s, "TTFT p99": load.ttft_p99_s}
    not_negative = {"batch": load.batch, "output tokens/s": load.output_tok_s, "capacity": p.capacity_tok_s}
    for name, x in (*positive.items(), *not_negative.items()):
        if x is None or not math.isfinite(x) or x < 0 or (x == 0 and name in positive):
            raise PredictionError(f"{p.layout.label}: the predicted {name} is {x}")
    return p


def _at_load(s: Setting, layout: Layout, costs: f.StepCosts, slots: int, budget: int) -> f.LoadPoint:
    """The gateway spreads the fleet's load evenly over the DP replicas."""
    w = s.workload
    if w.request_rate is not None:
        return f.open_loop_point(costs, w.request_rate / layout.dp, slots, w.shape, budget)
    assert w.concurrency is not None
    return f.closed_loop_point(costs, w.concurrency / layout.dp, slots, w.shape, budget)


def _no_room(s: Setting, mem: f.Memory) -> str:
    gb = 1e9
    if mem.kv_bytes <= 0:
        return (f"weights {mem.weights_bytes / gb:.1f} GB + activations {mem.activation_bytes / gb:.1f} GB "
                f"+ reserve {mem.reserve_bytes / gb:.1f} GB per GPU exceed the {s.gpu.memory_gb:g} GB of a "
                f"{s.gpu.name}")
    return (f"KV room for {mem.kv_tokens} tokens per replica, less than one "
            f"{s.workload.shape.seq_tokens}-token sequence")


def _unfit(layout: Layout, why: str, mem: f.Memory | None) -> Prediction:
    return Prediction(layout, False, why, mem, 0, 0, None, None, None, None, None, 0.0, False)


def finite_or_none(x: float | None) -> float | None:
    """JSON has no infinity: an unbounded TTFT (overload) is reported as null."""
    return None if x is None or math.isinf(x) else x
