"""LocalShare: this gateway's share of every tenant's limits, enforced here while Redis is away.

With `--redis-url` all gateways enforce one limit together. When Redis cannot be reached,
serving without limits would let a tenant limited to 30/min send 1,000 requests in seconds;
refusing everyone would turn a Redis outage into a service outage. So each gateway falls back
to a share of each limit — `--quota-local-share`, else 1 / the number of gateways it last saw
in Redis — kept in this process until Redis answers again. Each outage starts from full local
buckets (a burst of at most the share of each limit), so the fleet together stays within about
one limit per minute.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from dpserve.gateway.admission.quota.base import QuotaVerdict
from dpserve.gateway.admission.quota.memory import MemoryQuotaStore
from dpserve.gateway.admission.tenants import Tenant, TenantLimits


def scaled_limits(limits: TenantLimits, share: float) -> TenantLimits:
    """Each limit times `share`, rounded up, at least 1 (a share never blocks a tenant outright)."""
    def scaled(value: int | None) -> int | None:
        return None if value is None else max(1, math.ceil(value * share))
    return TenantLimits(**{f.name: scaled(getattr(limits, f.name)) for f in dataclasses.fields(limits)})


class LocalShare:
    """Scaled limits in an in-process store; `reset()` when the shared store is back."""

    def __init__(self, clock: Callable[[], float], gateways_seen: Callable[[], int],
                 configured_share: float | None = None) -> None:
        self._clock = clock
        self._gateways_seen = gateways_seen
        self._configured = configured_share
        self._store = MemoryQuotaStore(clock)
        self._scaled: dict[str, Tenant] = {}
        self.active = False  # serving from the local share now (for metrics)

    def share(self) -> float:
        if self._configured is not None:
            return self._configured
        return 1.0 / max(1, self._gateways_seen())

    def acquire(self, tenant: Tenant, lease_id: str, tokens: int) -> QuotaVerdict:
        self.active = True
        return self._store.acquire_now(self._local(tenant), lease_id, tokens)

    def release(self, tenant: Tenant, lease_id: str, tokens: int) -> None:
        self._store.release_now(self._local(tenant), lease_id, tokens)

    def reset(self) -> None:
        """The shared store answers again: the next outage starts from full local buckets."""
        if self.active:
            self.active = False
            self._store = MemoryQuotaStore(self._clock)
            self._scaled.clear()

    def _local(self, tenant: Tenant) -> Tenant:
        scaled = self._scaled.get(tenant.name)
        if scaled is None:
            scaled = self._scaled[tenant.name] = dataclasses.replace(
                tenant, limits=scaled_limits(tenant.limits, self.share()))
        return scaled
