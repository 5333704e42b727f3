"""Tenant quota backends: in-process by default, Redis with `--redis-url` (shared by gateways)."""

from __future__ import annotations

from collections.abc import Callable

from dpserve.gateway.admission.quota.base import QuotaStore, QuotaUnavailable, QuotaVerdict
from dpserve.gateway.admission.quota.memory import MemoryQuotaStore


def build_quota_store(redis_url: str | None, clock: Callable[[], float], *,
                      fail_open: bool = True) -> QuotaStore:
    """The store for this gateway; the Redis client is only imported when Redis is asked for."""
    if redis_url is None:
        return MemoryQuotaStore(clock)
    from dpserve.gateway.admission.quota.redis_store import RedisQuotaStore

    while_down = ("serving each tenant this gateway's share of its limits until it is back "
                  "(--quota-fail-open)" if fail_open
                  else "answering 503 to tenants with limits until it is back (--no-quota-fail-open)")
    return RedisQuotaStore(redis_url, while_down=while_down)


__all__ = ["MemoryQuotaStore", "QuotaStore", "QuotaUnavailable", "QuotaVerdict", "build_quota_store"]
