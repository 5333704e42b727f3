"""The one recommended layout, ranked by the offered load, and the reason for it in plain words.

Ranking: layouts that fit and meet the SLOs at the offered load first; then output tokens/s at that
load; within 3% of the best, the most load that still meets the SLOs (capacity); then more DP
replicas (independent failures, no all-reduce). The reason compares the best with the best layout
of the smallest listed replicas, in the terms that ranked them (SLOs met, tokens/s, or, within 3%,
capacity), and names the regime:
- shard-bound: the recommended replicas are the smallest listed; "the weights need N GPUs" only when
  no smaller replica fits at all, else the rule that left the smaller ones out is named;
- replica-bound: one small replica fits; replicas add throughput, deeper sharding adds all-reduce;
- latency-bound: the smaller replicas' requests are slower (TPOT or TTFT, e.g. steps bound by memory
  reads that deeper TP splits), which costs them the SLOs, tokens/s or capacity;
- KV-bound: small replicas hold too few sequences at these lengths and queue at this load (or, at
  capacity, their KV limits their slots enough to explain the gap).
Each regime is named only when the prediction shows it (a layout said to queue does queue; a lower
TPOT is lower). When no layout meets the SLOs, the reason says so first and then why the best of the
rest was chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from dpserve.planner.formulas import WEIGHT_BYTES, param_counts, queue_wait_quantile_s
from dpserve.planner.layouts import Layout, fits_nodes
from dpserve.planner.predict import Prediction, PredictionError, Setting, predict

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
    size = best.layout.gpus_per_replica
    if size == smallest == 1:
        weights_gb = param_counts(s.arch).total * s.weight_bytes / 1e9
        return "replica-bound", (f"replica-bound — one {s.gpu.name} holds the model ({weights_gb:.0f} GB) "
                                 f"with KV room for {best.max_seqs} sequences of "
                                 f"{s.workload.shape.seq_tokens} tokens, so more replicas add throughput "
                                 "while deeper sharding would only add all-reduce time")
    if size == smallest:
        return "shard-bound", _shard_words(s, best)
    small = next(p for p in ordered if p.layout.gpus_per_replica == smallest)
    if best.slo_met and not small.slo_met:
        return _slo_words(s, best, small)
    if small.output_tok_s >= (1 - TIE) * best.output_tok_s:
        return _tie_words(s, best, small, ordered)
    return _more_words(s, best, small)


def _shard_words(s: Setting, best: Prediction) -> str:
    """The listed replicas are the smallest that fit; say whether the weights alone set that size or
    the rule that replicas split the GPUs evenly and tile the nodes (layouts.enumerate_layouts)."""
    size, dp, n = best.layout.gpus_per_replica, best.layout.dp, best.layout.num_gpus
    weights_gb = param_counts(s.arch).total * s.weight_bytes / 1e9
    then = f", and the other GPUs become {dp} replicas (replica-bound beyond that)" if dp > 1 else ""
    fits_on, uneven, untiled = _smaller_fits(s, n, size)
    if fits_on is None:
        return (f"shard-bound — the weights ({weights_gb:.0f} GB) need {size} GPUs per replica to fit with "
                f"KV room (TP/PP before DP){then}")
    rules = [f"splits the {n} GPUs evenly"] * uneven + [f"tiles the {s.gpus_per_node}-GPU nodes"] * untiled
    return (f"shard-bound — the weights ({weights_gb:.0f} GB) fit with KV room on {fits_on} GPUs, but the "
            f"smallest replica that fits and {' and '.join(rules)} is {size} GPUs (TP/PP before DP){then}")


def _smaller_fits(s: Setting, num_gpus: int, size: int) -> tuple[int | None, bool, bool]:
    """The smallest replica below `size` GPUs that fits (None: none does), and whether the fitting
    sizes below `size` were left out for not dividing the GPUs, for not tiling the nodes."""
    first: int | None = None
    uneven = untiled = False
    for g in range(1, size):
        even = num_gpus % g == 0
        if first is not None and (untiled if even else uneven):
            continue  # a fit at this size would tell nothing new
        if _fits(s, num_gpus, g):
            first = first or g
            untiled, uneven = untiled or even, uneven or not even
    return first, uneven, untiled


def _fits(s: Setting, num_gpus: int, size: int) -> bool:
    """Does some TP × PP replica of `size` GPUs fit (its TP group inside a node)?"""
    no_slos = replace(s, ttft_slo_s=None, tpot_slo_s=None)  # fitting does not depend on them; faster
    for tp in (t for t in range(1, size + 1) if size % t == 0 and fits_nodes(num_gpus, s.gpus_per_node, t)):
        for dpa in (False, True) if tp > 1 and (s.arch.is_mla or s.arch.is_moe) else (False,):
            try:
                if predict(no_slos, Layout(1, tp, size // tp, dpa)).fits:
                    return True
            except PredictionError:
                continue
    return False


def _slo_words(s: Setting, best: Prediction, small: Prediction) -> tuple[str, str]:
    """`best` meets the SLOs at this load and the best small-replica layout does not."""
    assert small.load is not None and best.load is not None and small.parts is not None
    load, size = s.workload.load_words, best.layout.gpus_per_replica
    ttft_miss = small.load.overloaded or (s.ttft_slo_s is not None and small.load.ttft_p99_s > s.ttft_slo_s)
    if queues(s, small) and small.slots < best.slots and ttft_miss:
        return "kv-bound", (f"KV-bound — {small.layout.label} holds only {small.slots} sequences per replica "
                            f"at these lengths and queues at {load} (TTFT p99 {_ms(small.load.ttft_p99_s)}), "
                            f"missing the SLOs; {size} GPUs per replica hold {best.slots} and meet them")
    if small.load.overloaded:
        return _faster_words(s, best, small, f"{small.layout.label} is overloaded at {load}")
    if s.tpot_slo_s is not None and small.load.tpot_p99_s > s.tpot_slo_s:
        name, slo_s, mine, theirs = "TPOT", s.tpot_slo_s, best.load.tpot_p99_s, small.load.tpot_p99_s
    else:
        assert s.ttft_slo_s is not None
        name, slo_s, mine, theirs = "TTFT", s.ttft_slo_s, best.load.ttft_p99_s, small.load.ttft_p99_s
    parts = small.parts
    splits = name == "TPOT" and parts.memory_s >= parts.compute_s and best.layout.tp > small.layout.tp
    read = (f", its steps bound by reading the weights and KV (reads {parts.memory_s * 1e3:.1f} ms vs math "
            f"{parts.compute_s * 1e3:.1f} ms), which TP={best.layout.tp} splits" if splits else "")
    missed = (f"at {load} a {small.layout.label} replica misses the {name} objective (p99 {_ms(theirs, 1)} > "
              f"{slo_s * 1e3:g} ms){read}; {size} GPUs per replica meet it ({_ms(mine, 1)})")
    return _faster_words(s, best, small, missed)


def _tie_words(s: Setting, best: Prediction, small: Prediction,
               ordered: Sequence[Prediction]) -> tuple[str, str]:
    """`best` serves no more than 3% above the best small-replica layout: capacity decided."""
    outs = [p.output_tok_s for p in ordered]
    keep_up = all(p.load is not None and not p.load.overloaded for p in ordered)
    if keep_up and min(outs) >= (1 - TIE) * max(outs):
        served = f"every layout serves the offered load ({_tok_range(min(outs), max(outs))} tok/s)"
    else:
        served = (f"{small.layout.label} serves about the same ({small.output_tok_s:.0f} vs "
                  f"{best.output_tok_s:.0f} tok/s: within 3%, a tie)")
    if best.capacity_tok_s <= small.capacity_tok_s:  # small fell below a layout serving 3% more than it
        return _faster_words(s, best, small, served)
    top = max(p.capacity_tok_s for p in ordered if p.slo_met == best.slo_met)
    most = ("the most" if best.capacity_tok_s >= top
            else "within 3% of the most" if best.capacity_tok_s >= (1 - TIE) * top else "more")
    within = " within the SLOs" if best.slo_met and (s.ttft_slo_s, s.tpot_slo_s) != (None, None) else ""
    words = (f"{served}; {best.layout.label} has {most} capacity{within}: {best.capacity_tok_s:.0f} tok/s vs "
             f"{small.capacity_tok_s:.0f} for {small.layout.label}")
    total, best_total = small.slots * small.layout.dp, best.slots * best.layout.dp
    # KV-bound when its KV limits its slots, and slots in proportion would at least make up the gap
    if small.slots == small.max_seqs and best.capacity_tok_s * total <= small.capacity_tok_s * best_total:
        return "kv-bound", (f"KV-bound at capacity — {words}, whose replicas hold only {small.slots} "
                            f"sequences each at these lengths ({total} in all vs {best_total})")
    if best.load is not None and small.load is not None and best.load.tpot_p50_s < small.load.tpot_p50_s:
        slo = (f", so its TPOT p99 reaches the {s.tpot_slo_s * 1e3:g} ms objective at a higher load"
               if within and s.tpot_slo_s is not None else "")
        return "latency-bound", (f"latency-bound at capacity — {words}; {best.layout.label}'s steps are "
                                 f"faster (TPOT p50 "
                                 f"{_ms(best.load.tpot_p50_s, 1)} vs {_ms(small.load.tpot_p50_s, 1)}){slo}")
    return _faster_words(s, best, small, words)


def _more_words(s: Setting, best: Prediction, small: Prediction) -> tuple[str, str]:
    """`best` serves more than 3% above the best small-replica layout, SLOs alike."""
    assert small.load is not None and best.load is not None and small.parts is not None
    size, load = best.layout.gpus_per_replica, s.workload.load_words
    if (queues(s, small) and small.slots < best.slots
            and (best.load.overloaded or small.load.ttft_p99_s > 2 * best.load.ttft_p99_s)):
        return "kv-bound", (f"KV-bound — {small.layout.label} holds only {small.slots} sequences per replica "
                            f"at these lengths and queues at {load} (TTFT p99 "
                            f"{_ms(small.load.ttft_p99_s)}); {size} GPUs per replica hold {best.slots}")
    parts = small.parts
    if (parts.memory_s >= parts.compute_s and best.layout.tp > small.layout.tp
            and best.load.tpot_p50_s < small.load.tpot_p50_s):
        return "latency-bound", (f"latency-bound — at {load} a {small.layout.label} replica "
                                 f"runs {small.load.batch:.1f} sequences and each step is bound by reading "
                                 f"the weights and KV (reads {parts.memory_s * 1e3:.1f} ms vs math "
                                 f"{parts.compute_s * 1e3:.1f} ms); TP={best.layout.tp} splits that read "
                                 f"(TPOT p50 {best.load.tpot_p50_s * 1e3:.1f} ms vs "
                                 f"{small.load.tpot_p50_s * 1e3:.1f} ms)")
    return _faster_words(s, best, small, f"{size} GPUs per replica serve {best.output_tok_s:.0f} tok/s vs "
                                         f"{small.output_tok_s:.0f} for {small.layout.label}")


def _faster_words(s: Setting, best: Prediction, small: Prediction, said: str) -> tuple[str, str]:
    """What is left, named by what the predictions show at this load: a lower TPOT (latency-bound),
    or a queue for the smaller layout's fewer slots (KV-bound); else no regime, the figures alone."""
    assert small.load is not None and best.load is not None
    size, load = best.layout.gpus_per_replica, s.workload.load_words
    pairs = [(name, mine, theirs) for name, mine, theirs in (
        ("TTFT p50", best.load.ttft_p50_s, small.load.ttft_p50_s),
        ("TPOT p50", best.load.tpot_p50_s, small.load.tpot_p50_s)) if mine < theirs]
    figures = ", ".join(f"{name} {_ms(mine, 1)} vs {_ms(theirs, 1)}" for name, mine, theirs in pairs)
    sooner = f"; {size} GPUs per replica finish requests sooner at {load} ({figures})" if pairs else ""
    if best.load.tpot_p50_s < small.load.tpot_p50_s:
        return "latency-bound", f"latency-bound — {said}{sooner}"
    if queues(s, small) and small.slots < best.slots:
        return "kv-bound", (f"KV-bound — {said}; {small.layout.label} holds only {small.slots} sequences per "
                            f"replica at these lengths and queues at {load} ({size} GPUs per replica hold "
                            f"{best.slots}){sooner}")
    assert best.prefill_s is not None and small.prefill_s is not None
    prefill = (f", their prefill the faster (one prompt alone: {_ms(best.prefill_s, 1)} vs "
               f"{_ms(small.prefill_s, 1)})" if pairs and best.prefill_s < small.prefill_s else "")
    return "mixed", f"no one regime explains it — {said}{sooner}{prefill}"


def _tok_range(lo: float, hi: float) -> str:
    return f"{hi:.0f}" if f"{lo:.0f}" == f"{hi:.0f}" else f"{lo:.0f}–{hi:.0f}"


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
    return (f"its steps are {kind}-bound at batch {_batch(b)} per replica (weights + KV reads "
            f"{parts.memory_s * 1e3:.1f} ms vs math {parts.compute_s * 1e3:.1f} ms, overlapped "
            f"{parts.device_s * 1e3:.1f} ms; host {parts.host_s * 1e3:.1f} ms, communication "
            f"{parts.comm_s * 1e3:.1f} ms per step)")


def _batch(b: float) -> str:
    """Whole sequences from one up; a light load's fraction of one as such, never "batch 0"."""
    return f"{b:.0f}" if b >= 0.95 else f"{b:.1f}" if b >= 0.1 else "below 0.1"


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
