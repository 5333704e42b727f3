"""TTFT SLO estimator: how long would a new request wait before its first token is computed?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dpserve.gateway.admission.contract import WorkerLoad


@dataclass(frozen=True)
class WaitEstimate:
    """Predicted queueing delay for a request arriving now, and the backlog it is based on."""

    wait_s: float
    backlog: int


def estimate_wait(loads: Sequence[WorkerLoad], gateway_queued: int, has_capacity: bool,
                  completions_per_s: float | None) -> WaitEstimate | None:
    """Queueing delay a new request would see; None when there is no evidence to estimate from.

    Requests ahead of it: those in the gateway queue plus those the healthy replicas report as
    waiting. If nobody is ahead and a worker has room it starts at once. Otherwise it starts after
    `backlog + 1` requests have finished (each completion frees one place) at the fleet's recent
    completion rate. Prefill time is not modelled: under overload queueing dominates TTFT.
    """
    backlog = gateway_queued + sum(max(0, w.waiting) for w in loads if w.healthy)
    if backlog == 0 and has_capacity:
        return WaitEstimate(0.0, 0)
    if not completions_per_s or completions_per_s <= 0:
        return None
    return WaitEstimate((backlog + 1) / completions_per_s, backlog)


def misses_slo(estimate: WaitEstimate | None, slo_ms: float) -> bool:
    """Refuse only on evidence: an unknown estimate admits (the queue timeout still bounds it)."""
    return estimate is not None and estimate.wait_s * 1000.0 > slo_ms
