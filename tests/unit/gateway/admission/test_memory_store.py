import pytest

from dpserve.gateway.admission.quota.bucket import TokenBucket
from dpserve.gateway.admission.quota.memory import MemoryQuotaStore
from dpserve.gateway.admission.tenants import Tenant, TenantLimits

from .fakes import FakeClock


def test_bucket_bursts_to_limit_then_refills_per_minute() -> None:
    bucket = TokenBucket(60, now=0.0)
    for _ in range(60):
        assert bucket.has(0.0)
        bucket.charge(0.0, 1)
    assert not bucket.has(0.0)
    assert bucket.seconds_until(0.0) == pytest.approx(1.0)
    assert bucket.has(1.0)
    assert bucket.level(1000.0) == 60.0


def test_requests_per_minute_refuses_with_retry_after() -> None:
    clock = FakeClock()
    store = MemoryQuotaStore(clock)
    tenant = Tenant("t", TenantLimits(requests_per_minute=3))
    assert all(store.acquire_now(tenant, str(i)).allowed for i in range(3))
    verdict = store.acquire_now(tenant, "x")
    assert (verdict.allowed, verdict.limit, verdict.limit_value) == (False, "requests_per_minute", 3)
    assert verdict.retry_after_s == pytest.approx(20.0)
    clock.advance(20.0)
    assert store.acquire_now(tenant, "y").allowed


def test_tokens_per_minute_charged_at_release_blocks_while_in_debt() -> None:
    clock = FakeClock()
    store = MemoryQuotaStore(clock)
    tenant = Tenant("t", TenantLimits(tokens_per_minute=600))
    assert store.acquire_now(tenant, "a").allowed
    store.release_now(tenant, "a", 900)  # 300 tokens of debt: 30 s to get back to 0, +0.1 s to 1
    verdict = store.acquire_now(tenant, "b")
    assert verdict.limit == "tokens_per_minute"
    assert verdict.retry_after_s == pytest.approx(30.1)
    clock.advance(30.2)
    assert store.acquire_now(tenant, "b").allowed


def test_max_concurrency_counts_leases_until_released() -> None:
    store = MemoryQuotaStore(FakeClock())
    tenant = Tenant("t", TenantLimits(max_concurrency=2))
    assert store.acquire_now(tenant, "a").allowed and store.acquire_now(tenant, "b").allowed
    assert store.acquire_now(tenant, "c").limit == "max_concurrency"
    store.release_now(tenant, "a", 0)
    assert store.acquire_now(tenant, "c").allowed


def test_refusal_takes_nothing_and_tenants_are_independent() -> None:
    store = MemoryQuotaStore(FakeClock())
    limited = Tenant("busy", TenantLimits(requests_per_minute=2, max_concurrency=1))
    other = Tenant("calm", TenantLimits(requests_per_minute=2))
    assert store.acquire_now(limited, "a").allowed
    assert store.acquire_now(limited, "b").limit == "max_concurrency"
    store.release_now(limited, "a", 0)
    assert store.acquire_now(limited, "b").allowed  # the refused try did not spend a request
    assert store.acquire_now(limited, "c").limit is not None
    assert store.acquire_now(other, "d").allowed and store.acquire_now(other, "e").allowed
