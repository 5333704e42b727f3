"""Tenant quota backends: in-process by default, Redis with `--redis-url` (shared by gateways)."""

from __future__ import annotations

from collections.abc import Callable

from dpserve.gateway.admission.quota.base import QuotaStore, QuotaUnavailable, QuotaVerdict
from dpserve.gateway.admission.quota.memory import MemoryQuotaStore


def build_quota_store(redis_url: str | None, clock: Callable[[], float]) -> QuotaStore:
    """The store for this gateway; the Redis client is only imported when Redis is asked for."""
    if redis_url is None:
        return MemoryQuotaStore(clock)
    from dpserve.gateway.admission.quota.redis_store import RedisQuotaStore

    return RedisQuotaStore(redis_url)


__all__ = ["MemoryQuotaStore", "QuotaStore", "QuotaUnavailable", "QuotaVerdict", "build_quota_store"]
