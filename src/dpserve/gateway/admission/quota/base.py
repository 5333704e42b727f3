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


class QuotaStore(ABC):
    """Enforces a tenant's requests_per_minute, tokens_per_minute and max_concurrency.

    `acquire` is all-or-nothing: either every limit has room and the request is counted (one
    request, one concurrency slot under `lease_id`), or nothing changes. tokens_per_minute is
    checked at admission (the tenant must not be in token debt) and charged at `release`, when
    the real prompt + completion count is known. Both raise QuotaUnavailable when the backend is
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
    async def acquire(self, tenant: Tenant, lease_id: str) -> QuotaVerdict:
        """Count one request of `tenant` if all its limits have room."""

    @abstractmethod
    async def release(self, tenant: Tenant, lease_id: str, tokens: int) -> None:
        """Free the concurrency slot `lease_id` and charge `tokens` to tokens_per_minute."""

    def is_up(self) -> bool:
        """Whether the backend answered last time (always True in-process)."""
        return True
