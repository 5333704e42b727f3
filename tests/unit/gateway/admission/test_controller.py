"""Admission end to end on fakes: tenants, quotas, SLO shedding, fail-open/closed and metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dpserve.gateway.admission import AdmissionConfig, AdmissionContext, WorkerLoad, build_admission
from dpserve.gateway.admission.controller import Admission
from dpserve.gateway.admission.quota.base import QuotaStore, QuotaUnavailable, QuotaVerdict
from dpserve.gateway.admission.rejection import Rejection
from dpserve.gateway.admission.tenants import Tenant, load_key_file

from .fakes import FakeCapacity, FakeClock

KEYS = """
keys:
  - {key: k-small, tenant: small, requests_per_minute: 2, tokens_per_minute: 100}
  - {key: k-big, tenant: big}
  - {key: k-tok, tenant: tok, tokens_per_minute: 100}
"""
CTX = AdmissionContext(prompt_chars=40, max_tokens=8)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(KEYS)
    return path


async def test_nothing_configured_admits_everyone_as_default_tenant() -> None:
    adm = build_admission(AdmissionConfig(), FakeCapacity(cap=0))
    await adm.start()
    ticket = await adm.admit({}, CTX)
    assert ticket.tenant.name == "default" and ticket.lease_id is None
    ticket.release(None, 5)
    ticket.release(100, 100)  # only the first release counts
    text = adm.metrics_text()
    assert 'dpserve_admission_admitted_total{tenant="default"} 1' in text
    assert 'dpserve_tenant_tokens_total{tenant="default",kind="prompt"} 10' in text
    assert 'dpserve_tenant_tokens_total{tenant="default",kind="completion"} 5' in text
    assert 'dpserve_quota_backend_up{backend="memory"} 1' in text
    await adm.stop()


async def test_keys_required_and_over_limit_names_the_limit(keys_file: Path) -> None:
    clock = FakeClock()
    adm = build_admission(AdmissionConfig(api_keys=keys_file), FakeCapacity(), clock=clock)
    await adm.start()
    with pytest.raises(Rejection) as info:
        await adm.admit({}, CTX)
    assert info.value.status == 401
    for _ in range(2):
        (await adm.admit(_auth("k-small"), CTX)).release(10, 10)
    with pytest.raises(Rejection) as info:
        await adm.admit(_auth("k-small"), CTX)
    assert info.value.status == 429 and "requests_per_minute" in info.value.message
    assert info.value.headers["Retry-After"] == "30"
    big = [await adm.admit(_auth("k-big"), CTX) for _ in range(50)]  # the other tenant is unaffected
    assert len(big) == 50
    text = adm.metrics_text()
    assert 'dpserve_admission_rejected_total{reason="requests_per_minute",tenant="small"} 1' in text
    assert 'dpserve_admission_rejected_total{reason="missing_api_key",tenant="unknown"} 1' in text
    await adm.stop()


async def test_tokens_per_minute_counts_prompt_and_completion(keys_file: Path) -> None:
    clock = FakeClock()
    adm = build_admission(AdmissionConfig(api_keys=keys_file), FakeCapacity(), clock=clock)
    await adm.start()
    (await adm.admit(_auth("k-small"), CTX)).release(60, 60)  # 120 > 100: in debt
    await asyncio.sleep(0)  # the release is applied by a background task
    clock.advance(30.0)  # refills 50 of the 100 per minute; level = -20 + 50 = 30, a request fits
    (await adm.admit(_auth("k-small"), CTX)).release(0, 200)
    await asyncio.sleep(0)
    with pytest.raises(Rejection) as info:
        await adm.admit(_auth("k-small"), CTX)
    assert "tokens_per_minute limit (100)" in info.value.message
    await adm.stop()


async def test_parallel_requests_cannot_overrun_tokens_per_minute(keys_file: Path) -> None:
    """Each admission reserves prompt estimate + max_tokens, so 10 at once do not all pass 100."""
    adm = build_admission(AdmissionConfig(api_keys=keys_file), FakeCapacity(cap=100))
    await adm.start()
    ctx = AdmissionContext(prompt_chars=40, max_tokens=20)  # reserves 10 + 20 = 30
    outcomes = await asyncio.gather(*(adm.admit(_auth("k-tok"), ctx) for _ in range(10)),
                                    return_exceptions=True)
    admitted = [t for t in outcomes if not isinstance(t, BaseException)]
    assert len(admitted) == 3  # 30 + 30 + 30 <= 100; a fourth would need 30 of the 10 left
    assert all(isinstance(r, Rejection) and "tokens_per_minute" in r.message
               for r in outcomes if r not in admitted)
    for t in admitted:  # they used far less: settling refunds the rest of each reservation
        t.release(10, 2)
    await asyncio.sleep(0)
    assert [await adm.admit(_auth("k-tok"), ctx) for _ in range(2)]  # 100 - 36 = 64 → two more fit
    await adm.stop()


async def test_unknown_completion_is_charged_as_reserved(keys_file: Path) -> None:
    clock = FakeClock()
    adm = build_admission(AdmissionConfig(api_keys=keys_file, reserve_completion_tokens=50),
                          FakeCapacity(), clock=clock)
    await adm.start()
    no_max = AdmissionContext(prompt_chars=40, max_tokens=None)  # reserves 10 + 50
    ticket = await adm.admit(_auth("k-tok"), no_max)
    assert (ticket.reserved_tokens, ticket.reserved_completion) == (60, 50)
    ticket.release(None, None)  # nothing known: the reservation stands
    await asyncio.sleep(0)
    with pytest.raises(Rejection):  # 40 left < 60 needed
        await adm.admit(_auth("k-tok"), no_max)
    clock.advance(12.0)  # +20
    (await adm.admit(_auth("k-tok"), no_max)).release(10, 0)  # uses 10 of 60: refund 50
    await asyncio.sleep(0)
    with pytest.raises(Rejection):  # 50 left < 60
        await adm.admit(_auth("k-tok"), no_max)
    assert await adm.admit(_auth("k-tok"), AdmissionContext(prompt_chars=40, max_tokens=40))  # 50 fit
    await adm.stop()


async def test_a_huge_max_tokens_reserves_and_charges_at_most_a_minute_of_the_limit(keys_file: Path) -> None:
    """max_tokens 2**64 - 1 (or 1e300): at most tokens_per_minute is reserved, and charged when the
    count stays unknown, so the tenant waits a minute at most, not for ever."""
    clock = FakeClock()
    adm = build_admission(AdmissionConfig(api_keys=keys_file), FakeCapacity(), clock=clock)
    await adm.start()
    ticket = await adm.admit(_auth("k-tok"), AdmissionContext(prompt_chars=40, max_tokens=2**64 - 1))
    assert (ticket.reserved_tokens, ticket.reserved_completion) == (110, 100)
    ticket.release(None, None)  # an error answer: nothing known, the reservation stands
    await asyncio.sleep(0)
    with pytest.raises(Rejection) as info:
        await adm.admit(_auth("k-tok"), CTX)
    assert int(info.value.headers["Retry-After"]) <= 60
    clock.advance(60.0)
    assert await adm.admit(_auth("k-tok"), CTX)
    await adm.stop()


async def test_slo_mode_sheds_when_backlog_would_miss_it() -> None:
    clock = FakeClock()
    capacity = FakeCapacity(cap=1)
    adm = build_admission(AdmissionConfig(ttft_slo_ms=500.0), capacity, clock=clock)
    await adm.start()
    for _ in range(4):  # 4 completions over 2 s: 2/s
        (await adm.admit({}, CTX)).release(1, 1)
        clock.advance(0.5)
    capacity.loads = [WorkerLoad("w", True, waiting=9)]  # 9 waiting + itself at 2/s = 5 s > 500 ms
    with pytest.raises(Rejection) as info:
        await adm.admit({}, CTX)
    assert info.value.status == 429 and info.value.code == "slo_shed"
    assert "--ttft-slo-ms=500" in info.value.message
    capacity.loads = [WorkerLoad("w", True, waiting=0)]
    assert (await adm.admit({}, CTX)).tenant.name == "default"
    assert "dpserve_admission_estimated_wait_seconds 0" in adm.metrics_text()
    await adm.stop()


async def test_bad_priority_header_is_400() -> None:
    adm = build_admission(AdmissionConfig(priority_header="x-priority"), FakeCapacity())
    with pytest.raises(Rejection) as info:
        await adm.admit({"x-priority": "high"}, CTX)
    assert info.value.status == 400
    assert (await adm.admit({"x-priority": "3"}, CTX)).tenant.name == "default"


class DownStore(QuotaStore):
    """Redis that was seen with one other gateway, and is down now."""

    name = "redis"

    async def acquire(self, tenant: Tenant, lease_id: str, tokens: int = 0) -> QuotaVerdict:
        raise QuotaUnavailable("down")

    async def release(self, tenant: Tenant, lease_id: str, tokens: int) -> None:
        raise QuotaUnavailable("down")

    def is_up(self) -> bool:
        return False

    def gateways_seen(self) -> int:
        return 2


@pytest.mark.parametrize("fail_open", [True, False])
async def test_backend_down_follows_fail_open_flag(keys_file: Path, fail_open: bool) -> None:
    cfg = AdmissionConfig(api_keys=keys_file, quota_fail_open=fail_open)
    adm = Admission(cfg, FakeCapacity(), keyring=load_key_file(keys_file), store=DownStore())
    if fail_open:  # still limited: half of 2/min (two gateways were seen) is 1 here
        (await adm.admit(_auth("k-small"), CTX)).release(1, 1)
        with pytest.raises(Rejection) as info:
            await adm.admit(_auth("k-small"), CTX)
        assert info.value.status == 429 and "share 0.5" in info.value.message
        action, count, share = "local_share", 2, "0.5"
    else:
        with pytest.raises(Rejection) as info:
            await adm.admit(_auth("k-small"), CTX)
        assert info.value.status == 503
        action, count, share = "refused", 1, "0.0"
    assert (await adm.admit(_auth("k-big"), CTX)).tenant.name == "big"  # no limits: no backend call
    text = adm.metrics_text()
    assert f'dpserve_quota_unavailable_total{{action="{action}"}} {count}' in text
    assert 'dpserve_quota_backend_up{backend="redis"} 0' in text
    assert f"dpserve_quota_local_share {share}" in text
    await adm.stop()


async def test_configured_local_share_overrides_the_gateway_count(keys_file: Path) -> None:
    cfg = AdmissionConfig(api_keys=keys_file, quota_local_share=0.1)
    adm = Admission(cfg, FakeCapacity(), keyring=load_key_file(keys_file), store=DownStore())
    # k-small: tokens_per_minute 100 → 10 locally; a 10-char prompt + max_tokens 8 reserves 10 tokens
    (await adm.admit(_auth("k-small"), AdmissionContext(40, 8))).release(10, 0)
    with pytest.raises(Rejection) as info:
        await adm.admit(_auth("k-small"), AdmissionContext(40, 8))
    assert "requests_per_minute" in info.value.message  # 2 × 0.1 → 1 request
    await adm.stop()


async def test_queue_shed_returns_the_concurrency_slot(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    path.write_text("keys: [{key: k, tenant: t, max_concurrency: 1}]")
    capacity = FakeCapacity(cap=1, in_flight=1)
    adm = build_admission(AdmissionConfig(api_keys=path, max_inflight_per_worker=1, queue_size=0),
                          capacity)
    with pytest.raises(Rejection) as info:
        await adm.admit(_auth("k"), CTX)
    assert info.value.code == "queue_full"
    await asyncio.sleep(0)
    capacity.in_flight = 0
    ticket = await adm.admit(_auth("k"), CTX)  # the shed request's slot came back
    assert ticket.lease_id is not None
    await adm.stop()


async def test_client_gone_while_queued_returns_the_concurrency_slot(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    path.write_text("keys: [{key: k, tenant: t, max_concurrency: 1}]")
    capacity = FakeCapacity(cap=1, in_flight=1)
    adm = build_admission(AdmissionConfig(api_keys=path, max_inflight_per_worker=1), capacity)
    waiting = asyncio.create_task(adm.admit(_auth("k"), CTX))
    await asyncio.sleep(0)
    assert adm.queue_depth == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    capacity.in_flight = 0
    assert (await adm.admit(_auth("k"), CTX)).lease_id is not None
    assert adm.queue_depth == 0
    await adm.stop()
