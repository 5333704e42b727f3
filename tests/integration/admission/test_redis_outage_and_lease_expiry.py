"""Redis dies mid-test: admission follows --quota-fail-open; crashed gateways' slots expire."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from dpserve.gateway.admission import AdmissionConfig, AdmissionContext, build_admission
from dpserve.gateway.admission.controller import Admission
from dpserve.gateway.admission.quota.redis_store import RedisQuotaStore
from dpserve.gateway.admission.rejection import Rejection
from dpserve.gateway.admission.tenants import load_key_file

from .quota_client import AlwaysRoom
from .redis_server import RedisServer

CTX = AdmissionContext(8, 4)
BUSY = {"Authorization": "Bearer k-busy"}


@pytest.mark.parametrize("fail_open", [True, False])
async def test_redis_killed_then_back(redis_server: RedisServer, keys_file: Path, fail_open: bool,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dpserve.gateway.admission.quota.redis_store")
    cfg = AdmissionConfig(api_keys=keys_file, redis_url=redis_server.url, quota_fail_open=fail_open)
    adm = build_admission(cfg, AlwaysRoom())
    await adm.start()
    (await adm.admit(BUSY, CTX)).release(1, 1)
    redis_server.kill()
    for _ in range(3):
        if fail_open:
            (await adm.admit(BUSY, CTX)).release(1, 1)
        else:
            with pytest.raises(Rejection) as info:
                await adm.admit(BUSY, CTX)
            assert info.value.status == 503 and "--no-quota-fail-open" in info.value.message
    text = adm.metrics_text()
    assert 'dpserve_quota_backend_up{backend="redis"} 0' in text
    action = "served" if fail_open else "refused"
    assert f'dpserve_quota_unavailable_total{{action="{action}"}} 3' in text
    redis_server.start()  # same port, empty data
    await asyncio.sleep(1.1)  # past the store's retry interval
    (await adm.admit(BUSY, CTX)).release(1, 1)
    assert 'dpserve_quota_backend_up{backend="redis"} 1' in adm.metrics_text()
    transitions = [r.getMessage() for r in caplog.records]
    assert len(transitions) == 2, transitions  # logged once per transition, not per request
    assert "is DOWN" in transitions[0] and "is UP again" in transitions[1]
    assert ("--quota-fail-open" if fail_open else "--no-quota-fail-open") in transitions[0]
    await adm.stop()


async def test_slots_of_a_crashed_gateway_expire_while_live_ones_are_renewed(
        redis_server: RedisServer, keys_file: Path) -> None:
    cfg = AdmissionConfig(api_keys=keys_file, redis_url=redis_server.url)
    keyring = load_key_file(keys_file)

    def gateway() -> Admission:
        return Admission(cfg, AlwaysRoom(), keyring=keyring,
                         store=RedisQuotaStore(redis_server.url, lease_ttl_s=0.6))

    crashed, alive = gateway(), gateway()
    await crashed.start()
    await alive.start()
    for _ in range(2):
        await crashed.admit(BUSY, CTX)  # never released: its process "dies" below
    held = await alive.admit(BUSY, CTX)
    await crashed.stop()  # renewal stops, like a killed process
    await asyncio.sleep(1.0)  # > ttl: the crashed slots expire; alive's lease was renewed
    fresh = [await alive.admit(BUSY, CTX) for _ in range(2)]
    with pytest.raises(Rejection, match="max_concurrency"):
        await alive.admit(BUSY, CTX)  # held + 2 fresh = 3: the renewed lease still counts
    for ticket in (held, *fresh):
        ticket.release(1, 1)
    await alive.stop()
