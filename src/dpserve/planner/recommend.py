"""The one recommended layout, ranked by the offered load, and the reason for it in plain words.

Ranking: layouts that fit and meet the SLOs at the offered load first; then output tokens/s at that
load; within 3% of the best, the most load that still meets the SLOs (capacity); then more DP
replicas (independent failures, no all-reduce). The reason names the regime:
- shard-bound: the model needs this many GPUs per replica to fit (TP/PP first, DP after);
- replica-bound: one small replica fits; replicas add throughput, deeper sharding adds all-reduce;
- latency-bound: at this load a small replica's steps are bound by memory reads (it runs too few
  sequences to amortize reading the weights), which deeper TP splits;
- KV-bound: small replicas hold too few sequences at these lengths and queue at this load.
Each regime is named only when the prediction shows it (a layout said to queue does queue). When no
layout meets the SLOs, the reason says so first and then why the best of the rest was chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dpserve.planner.formulas import WEIGHT_BYTES, param_counts, queue_wait_quantile_s
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
    reason = f"{best.layout.label}: {words}; {_bound_words(best)}"
    if not best.slo_met:  # then no layout meets them: ranking puts every one that does first
        reason = f"{_nothing_meets(s, ordered)}; ranked by throughput instead, the best is {reason}"
    return Recommendation(best, regime, reason)


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
    assert small.load is not None and best.load is not None and small.parts is not None
    if queues(s, small) and small.slots < best.slots and small.load.ttft_p99_s > 2 * best.load.ttft_p99_s:
        return "kv-bound", (f"KV-bound — {small.layout.label} holds only {small.slots} sequences per replica "
                            f"at these lengths and queues at {s.workload.load_words} (TTFT p99 "
                            f"{_ms(small.load.ttft_p99_s)}); {size} GPUs per replica hold {best.slots}")
    parts = small.parts
    if (parts.memory_s >= parts.compute_s and best.layout.tp > small.layout.tp
            and best.output_tok_s > small.output_tok_s):
        return "latency-bound", (f"latency-bound — at {s.workload.load_words} a {small.layout.label} replica "
                                 f"runs {small.load.batch:.1f} sequences and each step is bound by reading "
                                 f"the weights and KV (reads {parts.memory_s * 1e3:.1f} ms vs math "
                                 f"{parts.compute_s * 1e3:.1f} ms); TP={best.layout.tp} splits that read "
                                 f"(TPOT p50 {best.load.tpot_p50_s * 1e3:.1f} ms vs "
                                 f"{small.load.tpot_p50_s * 1e3:.1f} ms)")
    return "shard-bound", (f"shard-bound at this load — {size} GPUs per replica serve "
                           f"{best.output_tok_s:.0f} tok/s vs {small.output_tok_s:.0f} "
                           f"for the best {smallest}-GPU replicas ({small.layout.label})")


def queues(s: Setting, p: Prediction) -> bool:
    """Do this layout's replicas queue at the offered load? Overloaded; or, closed loop, more requests
    in flight per replica than batch slots; or, open loop, a p99 wait for a slot above 0 (more than
    1% of arrivals wait: Erlang C; the wait's sign does not depend on the service time)."""
    assert p.load is not None
    if p.load.overloaded:
        return True
    if s.workload.concurrency is not None:
        return s.workload.concurrency / p.layout.dp > p.slots
    return queue_wait_quantile_s(0.99, p.slots, p.load.batch, 1.0) > 0


def _nothing_meets(s: Setting, ordered: Sequence[Prediction]) -> str:
    """Why no layout meets the SLOs: the overload, or each objective's lowest p99 over the layouts
    that keep up with the load."""
    keeping_up = [p for p in ordered if p.load is not None and not p.load.overloaded]
    if not keeping_up:  # (without SLOs, the only way to miss them)
        return f"no layout keeps up with {s.workload.load_words}: every one is overloaded"
    misses = []
    for name, slo_s, digits, p99 in (("TTFT", s.ttft_slo_s, 0, lambda p: p.load.ttft_p99_s),
                                     ("TPOT", s.tpot_slo_s, 1, lambda p: p.load.tpot_p99_s)):
        low = min(keeping_up, key=p99)
        if slo_s is not None and p99(low) > slo_s:
            misses.append(f"{name} p99 ≤ {slo_s * 1e3:g} ms: the lowest predicted is "
                          f"{_ms(p99(low), digits)}, {low.layout.label}")
    if not misses:  # both are set, and each is met by some layout
        misses.append("some layouts meet the TTFT objective and some the TPOT one, none both")
    return f"no layout meets the SLOs ({'; '.join(misses)})"


def _bound_words(p: Prediction) -> str:
    assert p.parts is not None and p.load is not None
    parts, b = p.parts, p.load.batch
    kind = "memory" if parts.memory_s >= parts.compute_s else "compute"
    return (f"its steps are {kind}-bound at batch {b:.0f} per replica (weights + KV reads "
            f"{parts.memory_s * 1e3:.1f} ms vs math {parts.compute_s * 1e3:.1f} ms, overlapped "
            f"{parts.device_s * 1e3:.1f} ms; host {parts.host_s * 1e3:.1f} ms, communication "
            f"{parts.comm_s * 1e3:.1f} ms per step)")


def _ms(seconds: float, digits: int = 0) -> str:
    return "unbounded" if seconds == float("inf") else f"{seconds * 1e3:.{digits}f} ms"


def _nothing_fits(s: Setting, preds: Sequence[Prediction]) -> str:
    first = next((p for p in preds if p.why_not), None)
    detail = f" (e.g. {first.layout.label}: {first.why_not})" if first else ""
    smaller = [d for d in ("fp8", "int4") if WEIGHT_BYTES[d] < s.weight_bytes]  # quantizing further helps
    advice = (f"add GPUs, pick a GPU with more memory, or quantize (--dtype {'/'.join(smaller)})" if smaller
              else "add GPUs or pick a GPU with more memory")
    return (f"no layout of {s.arch.name} fits on {preds[0].layout.num_gpus if preds else 0} × {s.gpu.name} "
            f"with dtype {s.dtype}{detail}; {advice}")
