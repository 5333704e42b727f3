"""Sample: what the dashboard computed at one tick — per replica, fleet, routing, tenants, diagnosis."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dpserve.diagnosis import Diagnosis
from dpserve.gateway.admission.tenants import Tenant, TenantLimits
from dpserve.gateway.dashboard import gateway_totals as gt
from dpserve.gateway.dashboard.replica_history import ReplicaStats
from dpserve.gateway.dashboard.ring import ColumnKey
from dpserve.gateway.worker import Worker

FLEET = ""  # the ring's scope of fleet-wide columns


@dataclass(frozen=True)
class ReplicaSample:
    """One replica at a tick: its own metrics (None before its first scrape) and the gateway's counts."""

    label: str
    worker_id: str | None  # None: it left the registry (a launcher restarting it, or removed)
    healthy: bool
    in_flight: int
    stats: ReplicaStats | None
    requests: int
    errors: int
    retries: int
    migrations: int


@dataclass(frozen=True)
class TenantUsage:
    """One tenant over the last minute at this gateway, against its limits."""

    tenant: str
    requests_last_minute: int
    tokens_last_minute: int
    in_flight: int
    limits: TenantLimits


@dataclass(frozen=True)
class Fleet:
    replicas: int
    healthy: int
    request_rate: float            # requests finished per second
    generation_tokens_per_s: float
    queue_depth: int
    rejected_429_per_s: float
    in_flight: int
    decisions_per_s: dict[str, float]
    decisions_total: dict[str, int]
    rejected_total: dict[str, int]  # by reason
    rejected_429_total: int


@dataclass(frozen=True)
class Sample:
    seq: int
    time: float  # wall clock, seconds since the epoch
    fleet: Fleet
    replicas: tuple[ReplicaSample, ...]
    tenants: tuple[TenantUsage, ...]
    diagnosis: Diagnosis  # its `replicas` findings are in the order of `replicas`


def label_workers(workers: Sequence[Worker]) -> dict[str, str]:
    """Worker id → the name the dashboard shows: the launcher's replica name (stable across restarts)
    when it is unique, else the worker id."""
    names = [w.origin.name for w in workers if w.origin.name is not None]
    labels = {}
    for w in workers:
        name = w.origin.name
        labels[w.id] = name if name is not None and names.count(name) == 1 else w.id
    return labels


def fleet_of(replicas: Sequence[ReplicaSample], rates: gt.Totals, totals: gt.Totals, seconds: float,
             queue_depth: int) -> Fleet:
    """Fleet numbers; `rates` is the totals at the start of the rate window, `seconds` its length."""
    return Fleet(
        replicas=sum(1 for r in replicas if r.worker_id is not None),
        healthy=sum(1 for r in replicas if r.healthy),
        request_rate=gt.per_second(rates, totals, (gt.FINISHED, ""), seconds),
        generation_tokens_per_s=sum((r.stats.generation_tokens_per_s or 0.0) for r in replicas if r.stats),
        queue_depth=queue_depth,
        rejected_429_per_s=gt.per_second(rates, totals, (gt.REJECTED_STATUS, "429"), seconds),
        in_flight=sum(r.in_flight for r in replicas),
        decisions_per_s={reason: gt.per_second(rates, totals, (gt.DECISIONS, reason), seconds)
                         for reason in gt.named(totals, gt.DECISIONS)},
        decisions_total=gt.named(totals, gt.DECISIONS),
        rejected_total=gt.named(totals, gt.REJECTED),
        rejected_429_total=totals[(gt.REJECTED_STATUS, "429")])


def tenants_of(known: Iterable[Tenant], minute_ago: gt.Totals, totals: gt.Totals,
               in_flight: dict[str, int]) -> tuple[TenantUsage, ...]:
    """Every tenant with limits, and every other tenant that sent requests (e.g. `default`)."""
    limits = {t.name: t.limits for t in known}
    names = list(limits) + sorted(set(gt.named(totals, gt.TENANT_REQUESTS)) - set(limits))
    return tuple(TenantUsage(
        tenant=name,
        requests_last_minute=totals[(gt.TENANT_REQUESTS, name)] - minute_ago[(gt.TENANT_REQUESTS, name)],
        tokens_last_minute=totals[(gt.TENANT_TOKENS, name)] - minute_ago[(gt.TENANT_TOKENS, name)],
        in_flight=max(0, in_flight.get(name, 0)), limits=limits.get(name, TenantLimits()))
        for name in names)


def ring_row(sample: Sample) -> dict[ColumnKey, float | None]:
    """The values of one sample kept in the 15-minute history."""
    f = sample.fleet
    row: dict[ColumnKey, float | None] = {
        (FLEET, "request_rate"): f.request_rate,
        (FLEET, "generation_tokens_per_s"): f.generation_tokens_per_s, (FLEET, "queue_depth"): f.queue_depth,
        (FLEET, "rejected_429_per_s"): f.rejected_429_per_s,
        (FLEET, "in_flight"): f.in_flight, (FLEET, "healthy"): f.healthy}
    for r in sample.replicas:
        s = r.stats
        row[(r.label, "healthy")] = float(r.healthy)
        row[(r.label, "in_flight")] = r.in_flight
        if s is not None:
            row[(r.label, "generation_tokens_per_s")] = s.generation_tokens_per_s
            row[(r.label, "kv_cache_usage")] = s.kv_cache_usage
            row[(r.label, "running")] = s.running
            row[(r.label, "waiting")] = s.waiting
            row[(r.label, "ttft_p99_s")] = s.ttft_p99_s
    return row
