"""The dashboard's JSON document (`GET /dashboard/data`): latest sample, live worker state, recent history.

The schema is documented in docs/architecture.md ("gateway/dashboard"); `SCHEMA_VERSION` changes
when a field changes meaning or goes away (fields may be added without a change).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from dpserve.diagnosis import Finding
from dpserve.gateway.dashboard.ring import SeriesSlice
from dpserve.gateway.dashboard.sample import FLEET, ReplicaSample, Sample, TenantUsage, label_workers
from dpserve.gateway.worker import Worker
from dpserve.natural_order import natural_key

SCHEMA_VERSION = 1


def build_snapshot(sample: Sample | None, workers: Sequence[Worker], series: SeriesSlice | None, *,
                   queue_depth: int, policy: str, interval_s: float, history_s: float,
                   next_sample_in_s: float) -> dict[str, Any]:
    """Health, circuit, in-flight and the polled gauges are read now; rates, quantiles, counters and
    the verdicts are the latest sample's (at most `interval_s` old)."""
    sampled = {r.label: (r, f) for r, f in zip(sample.replicas, sample.diagnosis.replicas, strict=True)
               } if sample else {}
    labels = label_workers(workers)
    rows = [_replica_row(labels[w.id], w, *sampled.get(labels[w.id], (None, None))) for w in workers]
    rows += [_replica_row(label, None, r, f) for label, (r, f) in sampled.items()
             if r.worker_id is None and label not in labels.values()]
    rows.sort(key=lambda row: natural_key(row["label"]))
    doc: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "seq": sample.seq if sample else 0, "time": sample.time if sample else None,
        "interval_s": interval_s, "history_s": history_s, "next_sample_in_s": round(next_sample_in_s, 3),
        "policy": policy, "fleet": _fleet(sample, workers, queue_depth), "replicas": rows,
        "tenants": [_tenant(t) for t in sample.tenants] if sample else [],
        "diagnosis": _finding(sample.diagnosis.fleet) if sample else None}
    if series is not None:
        doc["series"] = _series(series)
    return doc


def _replica_row(label: str, w: Worker | None, r: ReplicaSample | None, f: Finding | None) -> dict[str, Any]:
    s = r.stats if r else None
    polled = w.polled if w else None
    row: dict[str, Any] = {
        "label": label, "id": w.id if w else None, "name": w.origin.name if w else label,
        "url": w.url if w else None, "removed": w is None,
        "healthy": w.healthy if w else False, "circuit_state": w.breaker.state.value if w else None,
        "draining": w.draining if w else False, "weight": w.weight if w else None,
        "in_flight": w.in_flight if w else 0,
        "running": polled.running if polled else (s.running if s else None),
        "waiting": polled.waiting if polled else (s.waiting if s else None),
        "kv_cache_usage": polled.kv_cache_usage if polled else (s.kv_cache_usage if s else None),
        "restarts": w.origin.restarts if w and w.origin.name is not None else None}
    row.update(generation_tokens_per_s=None, preemptions_per_s=None, prefix_cache_hit_rate=None,
               ttft_p50_s=None, ttft_p99_s=None, max_num_seqs=None)
    if s is not None:
        row.update(generation_tokens_per_s=s.generation_tokens_per_s, preemptions_per_s=s.preemptions_per_s,
                   prefix_cache_hit_rate=s.prefix_cache_hit_rate, ttft_p50_s=s.ttft_p50_s,
                   ttft_p99_s=s.ttft_p99_s, max_num_seqs=s.max_num_seqs)
    row.update(requests=r.requests if r else 0, errors=r.errors if r else 0, retries=r.retries if r else 0,
               migrations=r.migrations if r else 0,
               state=f.state.value if f else None, finding=f.message if f else None)
    return row


def _fleet(sample: Sample | None, workers: Sequence[Worker], queue_depth: int) -> dict[str, Any]:
    live = {"replicas": len(workers), "healthy": sum(1 for w in workers if w.healthy),
            "queue_depth": queue_depth, "in_flight": sum(w.in_flight for w in workers)}
    if sample is None:
        return {**live, "request_rate": None, "generation_tokens_per_s": None, "rejected_429_per_s": None,
                "rejected_429_total": 0, "decisions": [], "rejected": {}}
    f = sample.fleet
    decisions = [{"reason": reason, "per_s": f.decisions_per_s.get(reason, 0.0), "total": total}
                 for reason, total in sorted(f.decisions_total.items())]
    return {**live, "request_rate": f.request_rate, "generation_tokens_per_s": f.generation_tokens_per_s,
            "rejected_429_per_s": f.rejected_429_per_s, "rejected_429_total": f.rejected_429_total,
            "decisions": decisions, "rejected": dict(sorted(f.rejected_total.items()))}


def _tenant(t: TenantUsage) -> dict[str, Any]:
    return {"tenant": t.tenant, "requests_last_minute": t.requests_last_minute,
            "tokens_last_minute": t.tokens_last_minute, "in_flight": t.in_flight, "limits": asdict(t.limits)}


def _finding(f: Finding) -> dict[str, Any]:
    return {"state": f.state.value, "bottleneck": f.replica_id, "message": f.message,
            "evidence": {k: round(v, 4) for k, v in f.evidence.items()}}


def _series(s: SeriesSlice) -> dict[str, Any]:
    fleet: dict[str, list[float | None]] = {}
    replicas: dict[str, dict[str, list[float | None]]] = {}
    for (scope, name), values in s.columns.items():
        (fleet if scope == FLEET else replicas.setdefault(scope, {}))[name] = values
    return {"first_seq": s.first_seq, "times": s.times, "fleet": fleet, "replicas": replicas}

