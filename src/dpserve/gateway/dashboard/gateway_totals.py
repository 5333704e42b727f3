"""The gateway's own counters read at one moment (per worker, routing reason, refusal, tenant), and rates.

Read from the same objects `/metrics` renders, never from its text: one sample is a few dict walks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

from dpserve.gateway.admission import Admission
from dpserve.gateway.metrics import GatewayMetrics

# (kind, name): kind is one of the constants below; name is a worker id, a reason or a tenant.
Key = tuple[str, str]
Totals = Counter[Key]

FINISHED = "finished"            # requests the proxy finished (any outcome), name ""
REQUESTS = "requests"            # answers per worker, any status
ERRORS = "errors"                # answers per worker with a 5xx (the replica failed, or did not answer)
RETRIES = "retries"              # failed tries per worker that were retried elsewhere
MIGRATIONS = "migrations"        # streams per worker that moved to another replica
DECISIONS = "decisions"          # routing decisions per reason
REJECTED = "rejected"            # admission refusals per reason
REJECTED_STATUS = "rejected_status"  # admission refusals per HTTP status ("429": shed)
TENANT_REQUESTS = "tenant_requests"  # admitted requests per tenant
TENANT_TOKENS = "tenant_tokens"      # prompt + completion tokens per tenant


def read_totals(metrics: GatewayMetrics, admission: Admission, worker_ids: Collection[str]) -> Totals:
    """Every counter the dashboard shows, for the workers in `worker_ids` (removed ones are left out)."""
    totals: Totals = Counter()
    totals[(FINISHED, "")] = metrics.duration.count
    for (worker, status), n in metrics.requests.items():
        if worker in worker_ids:
            totals[(REQUESTS, worker)] += n
            if status.startswith("5"):
                totals[(ERRORS, worker)] += n
    for kind, counter in ((RETRIES, metrics.worker_retries), (MIGRATIONS, metrics.worker_migrations)):
        for (worker,), n in counter.items():
            if worker in worker_ids:
                totals[(kind, worker)] = n
    for (_policy, reason), n in metrics.decisions.items():
        totals[(DECISIONS, reason)] += n
    am = admission.metrics
    for (reason, _tenant), n in am.rejected.items():
        totals[(REJECTED, reason)] += n
    for code, count in am.rejected_status.items():
        totals[(REJECTED_STATUS, str(code))] = count
    for tenant, n in am.admitted.items():
        totals[(TENANT_REQUESTS, tenant)] = n
    for (tenant, _kind), n in am.tokens.items():
        totals[(TENANT_TOKENS, tenant)] += n
    return totals


def per_second(before: Totals, after: Totals, key: Key, seconds: float) -> float:
    """Increase of one counter per second (0 over an empty interval)."""
    return max(0.0, after[key] - before[key]) / seconds if seconds > 0 else 0.0


def named(totals: Totals, kind: str) -> dict[str, int]:
    """{name: count} of one kind."""
    return {name: n for (k, name), n in totals.items() if k == kind}
