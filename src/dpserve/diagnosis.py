"""Fleet bottleneck rules (pure): what each replica did over a window → what limits the fleet, in words.

One set of rules for the gateway's dashboard and for `dpserve plan --diagnose`. The verdicts follow
the data-parallel rule of thumb:
- replica-bound (requests queue while the KV cache has room, or TPOT misses its SLO at a large
  batch): the replicas are busy computing — add DP replicas;
- KV-bound (preemptions, or a full KV cache with a queue): each replica runs out of KV memory —
  more KV per replica (TP/PP, a smaller max-model-len, quantization), not more replicas of the
  same shape;
- latency-bound (TPOT or TTFT over the SLO at a small batch): one request is too slow on one
  replica — deeper TP; more replicas do not make one request faster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from dpserve.prometheus_text import Buckets, Exposition, bucket_delta, histogram_quantile
from dpserve.serving.metrics import MAX_NUM_SEQS

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
PREEMPTIONS = "vllm:num_preemptions_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
TPOT = "vllm:time_per_output_token_seconds"
TTFT = "vllm:time_to_first_token_seconds"
# What window_from_scrapes reads of a scrape (for parse_exposition(text, only=...)).
WINDOW_SERIES = frozenset((RUNNING, WAITING, KV_USAGE, PREEMPTIONS, GENERATION_TOKENS, TPOT, TTFT,
                           MAX_NUM_SEQS))

# A scrape's numbers come from another process, perhaps a broken or hostile one; beyond these they
# are not a replica's state. Request gauges above a billion, a max-num-seqs above ten million
# (vLLM's cap is 1024 by default) and latency bounds above a day are read as "unknown".
MAX_REQUEST_GAUGE = 1e9
MAX_NUM_SEQS_READ = 10**7
MAX_LATENCY_BOUND_S = 86_400.0


class State(StrEnum):
    DOWN = "down"
    NO_METRICS = "no_metrics"  # healthy, but its /metrics could not be read: nothing to judge
    KV_BOUND = "kv_bound"
    REPLICA_BOUND = "replica_bound"
    LATENCY_BOUND = "latency_bound"
    IMBALANCED = "imbalanced"  # fleet only: some replicas queue while others have room
    IDLE = "idle"
    OK = "ok"


# Worst first: the fleet's bottleneck replica is the one with the earliest state here.
_SEVERITY = (State.DOWN, State.KV_BOUND, State.REPLICA_BOUND, State.LATENCY_BOUND, State.OK, State.IDLE,
             State.NO_METRICS)


@dataclass(frozen=True)
class Thresholds:
    """When a signal counts. Each default is a judgement, stated with its reason."""

    # A mean queue of one request or more over the window: arrivals outpace the batch. Below it,
    # a queue is the momentary wait of a request that joins at the next step.
    waiting: float = 1.0
    # vLLM preempts only when a running sequence cannot get a new KV block; a sustained rate of
    # one every 20 s is already recompute work the replica would not do with more KV.
    preemptions_per_s: float = 0.05
    # Above 90% KV use, vLLM's scheduler stops admitting new sequences long before max-num-seqs.
    kv_full: float = 0.90
    # "Small batch": with 4 or fewer sequences, a decode step is bound by reading the weights,
    # so TPOT is what one request gets on this replica whatever the load; only TP makes it faster.
    low_batch: float = 4.0
    # Running and waiting below this and no tokens: nothing to diagnose.
    idle: float = 0.05


@dataclass(frozen=True)
class ReplicaWindow:
    """What one replica did over a recent window (gauges averaged, counters as rates)."""

    replica_id: str
    healthy: bool = True
    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0  # 0..1
    preemptions_per_s: float = 0.0
    generation_tokens_per_s: float = 0.0
    tpot_p50_s: float | None = None
    ttft_p99_s: float | None = None
    max_num_seqs: int | None = None  # when known (the replica's configuration)
    # Why its /metrics could not be read over the window (None: it could, or nobody tried). A
    # healthy replica without metrics is "no_metrics", not "down" nor "idle".
    metrics_error: str | None = None


@dataclass(frozen=True)
class Finding:
    """One verdict: its state, the replica it is about (None for the fleet), words, and the numbers."""

    state: State
    replica_id: str | None
    message: str
    evidence: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Slo:
    """Latency objectives; None = not set (that rule is off)."""

    tpot_s: float | None = None
    ttft_s: float | None = None


@dataclass(frozen=True)
class Diagnosis:
    fleet: Finding
    replicas: tuple[Finding, ...]
    bottleneck: str | None  # the replica the fleet verdict is about


def window_from_scrapes(replica_id: str, scrapes: Sequence[tuple[float, Exposition]], *,
                        healthy: bool = True, max_num_seqs: int | None = None) -> ReplicaWindow:
    """A window from ≥1 timed scrapes of one replica's /metrics (oldest first): gauges averaged
    over every scrape, counters and histograms from the first to the last. `max_num_seqs` defaults
    to what the replica publishes (`dpserve:max_num_seqs`; vLLM does not).

    Numbers that cannot be a replica's state are not read: non-finite values, a max-num-seqs out
    of 1..10⁷, gauges above their range (KV usage > 1, a billion requests), histogram buckets with a
    NaN, negative or infinite count or a bound outside 0 s..a day (+Inf aside); negative gauges read
    as 0; a counter that falls (a restart) gives no rate (0)."""
    if not scrapes:
        return ReplicaWindow(replica_id, healthy=healthy, max_num_seqs=max_num_seqs)
    (t0, first), (t1, last) = scrapes[0], scrapes[-1]
    if max_num_seqs is None:
        max_num_seqs = max_num_seqs_of(last.get(MAX_NUM_SEQS))
    seconds = t1 - t0
    each = [s for _, s in scrapes]
    tpot = _latencies(first, last, TPOT) if len(scrapes) > 1 else ()
    ttft = _latencies(first, last, TTFT) if len(scrapes) > 1 else ()
    # Requests running and waiting are what every verdict starts from: without one usable value of
    # either, the load is unknown, not zero (an "idle" verdict would be a claim).
    known = any(_usable(s.get(name), MAX_REQUEST_GAUGE) for s in each for name in (RUNNING, WAITING))
    return ReplicaWindow(
        replica_id, healthy=healthy,
        metrics_error=None if known else "no usable vllm:num_requests_running or _waiting in its /metrics",
        running=_gauge_mean([s.get(RUNNING) for s in each], MAX_REQUEST_GAUGE),
        waiting=_gauge_mean([s.get(WAITING) for s in each], MAX_REQUEST_GAUGE),
        kv_cache_usage=_gauge_mean([s.get(KV_USAGE) for s in each], 1.0),
        preemptions_per_s=_counter_rate(first.get(PREEMPTIONS), last.get(PREEMPTIONS), seconds),
        generation_tokens_per_s=_counter_rate(first.get(GENERATION_TOKENS), last.get(GENERATION_TOKENS),
                                              seconds),
        tpot_p50_s=histogram_quantile(0.5, tpot), ttft_p99_s=histogram_quantile(0.99, ttft),
        max_num_seqs=max_num_seqs)


def middle_scrape(scrape: Exposition) -> Exposition:
    """What window_from_scrapes reads of a scrape that is neither a window's first nor its last (the
    gauges): a long watch keeps only this much of each."""
    return Exposition({k: v for k in _GAUGES if (v := scrape.values.get(k)) is not None}, {})


_GAUGES = (RUNNING, WAITING, KV_USAGE)


def max_num_seqs_of(value: float | None) -> int | None:
    """A replica's published max_num_seqs, or None for a value no replica could have (NaN, inf, < 1)."""
    return int(value) if value is not None and 1 <= value <= MAX_NUM_SEQS_READ else None  # NaN fails both


def _usable(value: float | None, cap: float) -> bool:
    return value is not None and math.isfinite(value) and value <= cap


def _gauge_mean(values: Sequence[float | None], cap: float) -> float:
    """The mean over the scrapes whose value is finite and at most `cap` (others are not a replica's
    state: unknown), negatives read as 0; 0 when no scrape has one. Summing value/n cannot overflow."""
    kept = [max(v, 0.0) for v in values if v is not None and _usable(v, cap)]
    return sum(v / len(kept) for v in kept) if kept else 0.0


def _counter_rate(before: float | None, after: float | None, seconds: float) -> float:
    """Per-second increase; 0 (no data) when a counter falls (the replica restarted in the window:
    how much it counted since is not known), is negative or non-finite, or the rate overflows."""
    if after is None or seconds <= 0:
        return 0.0
    if before is None:
        before = 0.0  # the series appeared in the window: it counted from 0
    if not (math.isfinite(before) and math.isfinite(after)) or before < 0 or after < before:
        return 0.0
    per_s = (after - before) / seconds
    return per_s if math.isfinite(per_s) else 0.0


def _latencies(first: Exposition, last: Exposition, name: str) -> Buckets:
    """A latency histogram's observations over the window; () when only +Inf is left (no quantile)."""
    delta = bucket_delta(_clean_buckets(first.buckets.get(name)), _clean_buckets(last.buckets.get(name)))
    return delta if any(math.isfinite(le) for le, _ in delta) else ()


def _clean_buckets(buckets: Buckets | None) -> Buckets | None:
    """The buckets a replica could have published: bound in [0, a day] or +Inf, count finite, ≥ 0."""
    if buckets is None:
        return None
    return tuple((le, n) for le, n in buckets
                 if (0 <= le <= MAX_LATENCY_BOUND_S or le == math.inf) and math.isfinite(n) and n >= 0)


# state → (what it is called, what to do)
_VERDICTS = {
    State.KV_BOUND: ("KV-bound", "more KV per replica (TP/PP, a smaller max-model-len, quantization)"),
    State.REPLICA_BOUND: ("replica-bound", "add replicas"),
    State.LATENCY_BOUND: ("latency-bound",
                          "deeper TP per replica (more replicas do not make one request faster)"),
}


def _bound(state: State, replica_id: str, observation: str, evidence: dict[str, float],
           subject: str = "") -> Finding:
    verdict, advice = _VERDICTS[state]
    return Finding(state, replica_id, f"{observation}: {subject}{verdict} — {advice}", evidence)


def diagnose_replica(w: ReplicaWindow, slo: Slo = Slo(), th: Thresholds = Thresholds(),
                     subject: str = "") -> Finding:
    """The one state that best explains this replica's window, with the numbers behind it.

    `subject` goes before the verdict ("the fleet is " when this replica speaks for the fleet).
    """
    ev = _evidence(w)
    name = w.replica_id
    if not w.healthy:
        return Finding(State.DOWN, name, f"{name} is down: it does not answer its health checks", ev)
    if w.metrics_error is not None:
        return Finding(State.NO_METRICS, name, f"{name} answers its health checks but its /metrics could not "
                       f"be read ({w.metrics_error})", ev)
    kv_pct = f"{w.kv_cache_usage:.0%}"
    if w.preemptions_per_s >= th.preemptions_per_s:
        return _bound(State.KV_BOUND, name, f"{name} preempts ({w.preemptions_per_s:.2f}/s) with KV "
                      f"{kv_pct} used, KV full", ev, subject)
    if w.kv_cache_usage >= th.kv_full and w.waiting >= th.waiting:
        return _bound(State.KV_BOUND, name, f"{name} has {w.waiting:.0f} waiting with KV {kv_pct} used, "
                      "KV full", ev, subject)
    if w.waiting >= th.waiting:
        return _bound(State.REPLICA_BOUND, name, f"{_batch_words(w)} with {w.waiting:.0f} waiting while KV "
                      f"is {kv_pct} used", ev, subject)
    slow = _slo_miss(w, slo)
    if slow is not None and w.running > th.low_batch:
        return _bound(State.REPLICA_BOUND, name, f"{name} misses the {slow} SLO at batch "
                      f"{w.running:.0f}, too much load per replica", ev, subject)
    if slow is not None:
        return _bound(State.LATENCY_BOUND, name, f"{name} misses the {slow} SLO at batch {w.running:.0f}",
                      ev, subject)
    if w.running < th.idle and w.waiting < th.idle and w.generation_tokens_per_s < th.idle:
        return Finding(State.IDLE, name, f"{name} is idle", ev)
    return Finding(State.OK, name,
                   f"{name} has room: {w.running:.1f} running, none waiting, KV {kv_pct} used", ev)


def diagnose_fleet(windows: Sequence[ReplicaWindow], slo: Slo = Slo(),
                   th: Thresholds = Thresholds()) -> Diagnosis:
    """Per-replica findings and one fleet verdict naming the bottleneck replica and what to do.
    Replicas that are down or gave no metrics are counted in the verdict's words, not judged."""
    findings = tuple(diagnose_replica(w, slo, th) for w in windows)
    seen = [i for i, f in enumerate(findings) if f.state not in _UNSEEN]
    healthy = sum(1 for f in findings if f.state is not State.DOWN)
    if not seen:
        return Diagnosis(_nobody_seen(findings, healthy), findings, None)
    at = min(seen, key=lambda i: _rank(findings[i]))  # by position: replica ids need not be unique
    worst, up = findings[at], [findings[i] for i in seen]
    counts = {s: sum(1 for f in up if f.state is s) for s in State}
    bound = counts[State.KV_BOUND] + counts[State.REPLICA_BOUND] + counts[State.LATENCY_BOUND]
    ev = {**worst.evidence, "replicas": float(len(findings)), "healthy": float(healthy),
          **{f"replicas_{s.value}": float(n) for s, n in counts.items() if n}}
    roomy = [f.replica_id for f in up if f.state in (State.IDLE, State.OK)]
    if bound and 2 * bound <= len(up) and roomy:
        fleet = Finding(State.IMBALANCED, worst.replica_id,
                        f"{worst.message}; but {_names(roomy)} {'has' if len(roomy) == 1 else 'have'} room: "
                        "load is uneven — check the routing policy and sticky sessions before adding "
                        "capacity", ev)
    elif bound:
        spoken = diagnose_replica(windows[at], slo, th, subject="the fleet is ")
        fleet = Finding(spoken.state, worst.replica_id, spoken.message, ev)
    elif counts[State.OK]:
        fleet = Finding(State.OK, None, f"no bottleneck: {len(up)} healthy replicas with room", ev)
    else:
        fleet = Finding(State.IDLE, None, f"idle: {len(up)} healthy replicas, no load", ev)
    unseen = _unseen_words(findings)
    if unseen:
        fleet = Finding(fleet.state, fleet.replica_id, f"{fleet.message} ({unseen})", fleet.evidence)
    return Diagnosis(fleet, findings, fleet.replica_id)


_UNSEEN = (State.DOWN, State.NO_METRICS)


def _nobody_seen(findings: Sequence[Finding], healthy: int) -> Finding:
    ev = {"replicas": float(len(findings)), "healthy": float(healthy)}
    if not healthy:
        return Finding(State.DOWN, None, "no replica is healthy" if findings else "no replicas", ev)
    unseen = _unseen_words(findings)
    return Finding(State.NO_METRICS, None, f"no healthy replica's /metrics could be read ({unseen})", ev)


def _unseen_words(findings: Sequence[Finding]) -> str:
    """"1 of 3 replicas down; 1 without metrics", or "" when every replica was seen."""
    down = sum(1 for f in findings if f.state is State.DOWN)
    blind = sum(1 for f in findings if f.state is State.NO_METRICS)
    words = [f"{down} of {len(findings)} replicas down"] if down else []
    if blind:
        words.append(f"{blind} without metrics" if down
                     else f"{blind} of {len(findings)} replicas without metrics")
    return "; ".join(words)


def _rank(f: Finding) -> tuple[int, float]:
    pressure = f.evidence.get("preemptions_per_s", 0.0) * 100 + f.evidence.get("waiting", 0.0)
    return _SEVERITY.index(f.state), -pressure


def _batch_words(w: ReplicaWindow) -> str:
    if w.max_num_seqs is not None and w.running >= 0.9 * w.max_num_seqs:
        return f"{w.replica_id} is at max-num-seqs ({w.max_num_seqs})"
    return f"{w.replica_id} runs {w.running:.0f}"


def _slo_miss(w: ReplicaWindow, slo: Slo) -> str | None:
    if slo.tpot_s is not None and w.tpot_p50_s is not None and w.tpot_p50_s > slo.tpot_s:
        return f"TPOT (p50 {w.tpot_p50_s * 1e3:.0f} ms > {slo.tpot_s * 1e3:.0f} ms)"
    if slo.ttft_s is not None and w.ttft_p99_s is not None and w.ttft_p99_s > slo.ttft_s:
        return f"TTFT (p99 {w.ttft_p99_s * 1e3:.0f} ms > {slo.ttft_s * 1e3:.0f} ms)"
    return None


def _names(ids: Sequence[str | None]) -> str:
    named = [i for i in ids if i is not None]
    return ", ".join(named[:3]) + (f" and {len(named) - 3} more" if len(named) > 3 else "")


def _evidence(w: ReplicaWindow) -> dict[str, float]:
    ev = {"running": w.running, "waiting": w.waiting, "kv_cache_usage": w.kv_cache_usage,
          "preemptions_per_s": w.preemptions_per_s, "generation_tokens_per_s": w.generation_tokens_per_s}
    if w.tpot_p50_s is not None:
        ev["tpot_p50_s"] = w.tpot_p50_s
    if w.ttft_p99_s is not None:
        ev["ttft_p99_s"] = w.ttft_p99_s
    if w.max_num_seqs is not None:
        ev["max_num_seqs"] = float(w.max_num_seqs)
    return ev
