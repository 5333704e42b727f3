"""MemoryQuotaStore: tenant limits held in this gateway process (the default backend)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dpserve.gateway.admission.quota.base import ALLOWED, QuotaStore, QuotaVerdict, reservation_need
from dpserve.gateway.admission.quota.bucket import TokenBucket
from dpserve.gateway.admission.tenants import Tenant


@dataclass
class _TenantState:
    requests: TokenBucket | None
    tokens: TokenBucket | None
    leases: set[str] = field(default_factory=set)


class MemoryQuotaStore(QuotaStore):
    """Exact limits for one process; N gateways with this store allow up to N× each limit.

    Only runs on the event loop thread, so no locks are needed.
    """

    name = "memory"

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._state: dict[str, _TenantState] = {}

    def _of(self, tenant: Tenant) -> _TenantState:
        state = self._state.get(tenant.name)
        if state is None:
            now, limits = self._clock(), tenant.limits
            state = _TenantState(
                TokenBucket(limits.requests_per_minute, now) if limits.requests_per_minute else None,
                TokenBucket(limits.tokens_per_minute, now) if limits.tokens_per_minute else None)
            self._state[tenant.name] = state
        return state

    async def acquire(self, tenant: Tenant, lease_id: str, tokens: int = 0) -> QuotaVerdict:
        return self.acquire_now(tenant, lease_id, tokens)

    def acquire_now(self, tenant: Tenant, lease_id: str, tokens: int = 0) -> QuotaVerdict:
        """`acquire` without the coroutine (what the async method runs)."""
        state, now, limits = self._of(tenant), self._clock(), tenant.limits
        cap = limits.max_concurrency
        if cap is not None and len(state.leases) >= cap:
            return QuotaVerdict(False, "max_concurrency", cap, 1.0)
        if state.requests is not None and not state.requests.has(now):
            return QuotaVerdict(False, "requests_per_minute", state.requests.limit,
                                state.requests.seconds_until(now))
        need = reservation_need(tokens, limits.tokens_per_minute)
        if state.tokens is not None and not state.tokens.has(now, need):
            return QuotaVerdict(False, "tokens_per_minute", state.tokens.limit,
                                state.tokens.seconds_until(now, need))
        if state.requests is not None:
            state.requests.charge(now, 1)
        if state.tokens is not None and tokens > 0:
            state.tokens.charge(now, tokens)
        if cap is not None:
            state.leases.add(lease_id)
        return ALLOWED

    async def release(self, tenant: Tenant, lease_id: str, tokens: int) -> None:
        self.release_now(tenant, lease_id, tokens)

    def release_now(self, tenant: Tenant, lease_id: str, tokens: int) -> None:
        state = self._of(tenant)
        state.leases.discard(lease_id)
        if state.tokens is not None and tokens != 0:
            state.tokens.charge(self._clock(), tokens)  # negative: the unused part of a reservation
