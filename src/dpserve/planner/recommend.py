"""The one recommended layout, ranked by the offered load, and the reason for it in plain words.

Ranking: layouts that fit and meet the SLOs at the offered load first; then output tokens/s at that
load; within 3% of the best, the most load that still meets the SLOs (capacity); then more DP
replicas (independent failures, no all-reduce). The reason names the regime:
- shard-bound: the model needs this many GPUs per replica to fit (TP/PP first, DP after);
- replica-bound: one small replica fits; replicas add throughput, deeper sharding adds all-reduce;
- latency-bound: at this load each small replica runs so few sequences that steps are bound by
  reading the weights, which only TP splits;
- KV-bound: small replicas hold too few sequences at these lengths and queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dpserve.diagnosis import Thresholds
from dpserve.planner.formulas import param_counts
from dpserve.planner.predict import Prediction, Setting

TIE = 0.03  # predictions closer than 3% are a tie: the model is not that precise


class PlanError(ValueError):
    """Nothing to recommend (no layout fits); the message says why."""


@dataclass(frozen=True)
class Recommendation:
    prediction: Prediction
    regime: str
    reason: str


def rank(preds: Sequence[Prediction]) -> list[Prediction]:
    """Fitting layouts best first (see the module docstring)."""
    fitting = [p for p in preds if p.fits]
    ordered: list[Prediction] = []
    rest = sorted(fitting, key=lambda p: (not p.slo_met, -p.output_tok_s))
    while rest:
        head = rest[0]
        group = [p for p in rest
                 if p.slo_met == head.slo_met and p.output_tok_s >= (1 - TIE) * head.output_tok_s]
        best = max(p.capacity_tok_s for p in group)
        group.sort(key=lambda p: (-_bucket(p.capacity_tok_s, best), -p.layout.dp, p.layout.dp_attention))
        ordered += group
        rest = [p for p in rest if p not in group]
    return ordered


def _bucket(capacity: float, best: float) -> float:
    """Capacities within 3% of the group's best count as equal (then more DP wins)."""
    return best if capacity >= (1 - TIE) * best else capacity


def recommend(s: Setting, preds: Sequence[Prediction]) -> Recommendation:
    ordered = rank(preds)
    if not ordered:
        raise PlanError(_nothing_fits(s, preds))
    best = ordered[0]
    regime, words = _regime(s, best, ordered)
    return Recommendation(best, regime, f"{best.layout.label}: {words}; {_bound_words(best)}")


def _regime(s: Setting, best: Prediction, ordered: Sequence[Prediction]) -> tuple[str, str]:
    smallest = min(p.layout.gpus_per_replica for p in ordered)
    size, dp = best.layout.gpus_per_replica, best.layout.dp
    weights_gb = param_counts(s.arch).total * s.weight_bytes / 1e9
    if size == smallest and size == 1:
        return "replica-bound", (f"replica-bound — one {s.gpu.name} holds the model ({weights_gb:.0f} GB) "
                                 f"with KV room for {best.max_seqs} sequences of "
                                 f"{s.workload.shape.seq_tokens} tokens, so more replicas add throughput "
                                 "while deeper sharding would only add all-reduce time")
    if size == smallest:
        then = f", and the other GPUs become {dp} replicas (replica-bound beyond that)" if dp > 1 else ""
        return "shard-bound", (f"shard-bound — the weights ({weights_gb:.0f} GB) need {size} GPUs per "
                               f"replica to fit with KV room (TP/PP before DP){then}")
    small = next(p for p in ordered if p.layout.gpus_per_replica == smallest)
    assert small.load is not None and best.load is not None
    if small.load.batch <= Thresholds().low_batch and best.output_tok_s > small.output_tok_s:
        return "latency-bound", (f"latency-bound — at {s.workload.load_words} a {small.layout.label} replica "
                                 f"runs only {small.load.batch:.1f} sequences, so each step is bound by "
                                 f"reading the weights; TP={best.layout.tp} splits that read "
                                 f"(TPOT p50 {best.load.tpot_p50_s * 1e3:.1f} ms vs "
                                 f"{small.load.tpot_p50_s * 1e3:.1f} ms)")
    if small.load.ttft_p99_s > 2 * best.load.ttft_p99_s and small.slots < best.slots:
        return "kv-bound", (f"KV-bound — {small.layout.label} holds only {small.slots} sequences per replica "
                            f"at these lengths and queues (TTFT p99 {_ms(small.load.ttft_p99_s)}); "
                            f"{size} GPUs per replica hold {best.slots}")
    return "shard-bound", (f"shard-bound at this load — {size} GPUs per replica serve "
                           f"{best.output_tok_s:.0f} tok/s within the SLOs vs {small.output_tok_s:.0f} "
                           f"for the best {smallest}-GPU replicas ({small.layout.label})")


def _bound_words(p: Prediction) -> str:
    assert p.parts is not None and p.load is not None
    parts, b = p.parts, p.load.batch
    kind = "memory" if parts.memory_s >= parts.compute_s else "compute"
    return (f"its steps are {kind}-bound at batch {b:.0f} per replica (weights + KV reads "
            f"{parts.memory_s * 1e3:.1f} ms vs math {parts.compute_s * 1e3:.1f} ms, overlapped "
            f"{parts.device_s * 1e3:.1f} ms; host {parts.host_s * 1e3:.1f} ms, communication "
            f"{parts.comm_s * 1e3:.1f} ms per step)")


def _ms(seconds: float) -> str:
    return "unbounded" if seconds == float("inf") else f"{seconds * 1e3:.0f} ms"


def _nothing_fits(s: Setting, preds: Sequence[Prediction]) -> str:
    first = next((p for p in preds if p.why_not), None)
    detail = f" (e.g. {first.layout.label}: {first.why_not})" if first else ""
    return (f"no layout of {s.arch.name} fits on {preds[0].layout.num_gpus if preds else 0} × {s.gpu.name} "
            f"with dtype {s.dtype}{detail}; add GPUs, pick a GPU with more memory, or quantize "
            "(--dtype fp8/int4)")
