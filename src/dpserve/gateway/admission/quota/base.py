"""QuotaStore: the contract of a tenant quota backend (in-process or Redis)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from dpserve.gateway.admission.tenants import Tenant

# A per-minute limit refills continuously at limit/60 per second, up to `limit` (a token bucket).
WINDOW_S = 60.0


class QuotaUnavailable(Exception):
    """The backend could not be reached; the caller applies the fail-open/closed policy."""


@dataclass(frozen=True)
class QuotaVerdict:
    """Outcome of one admission. `limit` names the exceeded limit when refused."""

    allowed: bool
    limit: str | None = None
    limit_value: int | None = None
    retry_after_s: float = 0.0


ALLOWED = QuotaVerdict(True)


def reservation_need(tokens: int, limit: int | None) -> float:
    """Tokens the bucket must hold to reserve `tokens`: all of them, at most a full bucket, at least 1."""
    return float(max(1, min(tokens, limit or 1)))


class QuotaStore(ABC):
    """Enforces a tenant's requests_per_minute, tokens_per_minute and max_concurrency.

    `acquire` is all-or-nothing: either every limit has room and the request is counted (one
    request, one concurrency slot under `lease_id`, and `tokens` reserved from tokens_per_minute),
    or nothing changes. A reservation needs that many tokens in the bucket (at most the whole
    limit, so one large request can still pass a full bucket): parallel requests each see the
    ones reserved before them. `release` frees the slot and settles `tokens` — the real count
    minus the reservation, so negative refunds. Both raise QuotaUnavailable when the backend is
    unreachable; they never raise for a tenant merely being over a limit.
    """

    name: str = "base"

    async def start(self) -> None:
        """Connect / start background work (lease renewal)."""
        return None

    async def stop(self) -> None:
        """Release resources; leases still held simply expire."""
        return None

    @abstractmethod
    async def acquire(self, tenant: Tenant, lease_id: str, tokens: int = 0) -> QuotaVerdict:
        """Count one request of `tenant` and reserve `tokens` if all its limits have room."""

    @abstractmethod
    async def release(self, tenant: Tenant, lease_id: str, tokens: int) -> None:
        """Free the concurrency slot `lease_id`; add `tokens` (may be negative) to tokens_per_minute."""

    def is_up(self) -> bool:
        """Whether the backend answered last time (always True in-process)."""
        return True

    def gateways_seen(self) -> int:
        """Gateways sharing this store when it last answered (1 for a store of this process only)."""
        return 1
