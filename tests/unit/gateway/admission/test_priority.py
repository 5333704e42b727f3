"""Priority classes: parsed safely, clamped to 0..9, never better than the tenant's class."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dpserve.config import ConfigError
from dpserve.gateway.admission import AdmissionConfig, AdmissionContext, build_admission
from dpserve.gateway.admission.priority import PRIORITY_MAX, PRIORITY_MIN, request_priority
from dpserve.gateway.admission.rejection import Rejection
from dpserve.gateway.admission.tenants import load_key_file

from .fakes import FakeCapacity

CTX = AdmissionContext(prompt_chars=40, max_tokens=8)


@pytest.mark.parametrize(("raw", "tenant_class", "expected"), [
    (None, 0, 0), (None, 3, 3),               # no header: the tenant's class
    ("5", 0, 5), (" 7 ", 2, 7), ("+4", 0, 4),  # lowering one's priority is allowed
    ("0", 3, 3), ("-5", 0, 0), ("-9999999", 0, PRIORITY_MIN), ("-1", 4, 4),  # never above the tenant's
    ("10", 0, PRIORITY_MAX), ("99999999", 0, PRIORITY_MAX),  # past the lowest class: the lowest
])
def test_header_is_clamped_between_the_tenant_class_and_the_lowest(raw: str | None, tenant_class: int,
                                                                  expected: int) -> None:
    assert request_priority(raw, "x-priority", tenant_class) == expected


@pytest.mark.parametrize("raw", ["high", "", " ", "1.5", "1e3", "٣", "-", "0x1",
                                 "9" * 4000, "-" + "9" * 4000, "123456789"])
def test_anything_but_a_short_integer_is_400(raw: str) -> None:
    with pytest.raises(Rejection) as info:
        request_priority(raw, "x-priority", 0)
    assert info.value.status == 400 and info.value.code == "invalid_priority"
    assert len(info.value.message) < 200  # a 4,000-digit value is not echoed back whole


def test_key_file_priority_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    path.write_text("keys: [{key: a, tenant: t, priority: 4}, {key: b, tenant: t, priority: 4}]")
    assert load_key_file(path).tenants[0].priority == 4
    for bad in ("10", "-1", "true", "'2'"):
        path.write_text(f"keys: [{{key: a, tenant: t, priority: {bad}}}]")
        with pytest.raises(ConfigError, match=r"priority must be an integer 0\.\.9"):
            load_key_file(path)
    path.write_text("keys: [{key: a, tenant: t, priority: 1}, {key: b, tenant: t, priority: 2}]")
    with pytest.raises(ConfigError, match="different limits or priority"):
        load_key_file(path)


async def test_a_client_cannot_jump_ahead_of_a_better_tenant(tmp_path: Path) -> None:
    """`batch` (class 5) asks for a huge negative priority; `gold` (class 0) still goes first."""
    path = tmp_path / "k.yaml"
    path.write_text("keys: [{key: kb, tenant: batch, priority: 5}, {key: kg, tenant: gold}]")
    capacity = FakeCapacity(cap=1, in_flight=1)
    adm = build_admission(AdmissionConfig(api_keys=path, max_inflight_per_worker=1,
                                          priority_header="x-priority"), capacity)
    await adm.start()
    batch = asyncio.create_task(adm.admit({"Authorization": "Bearer kb", "x-priority": "-99999"}, CTX))
    await asyncio.sleep(0)
    gold = asyncio.create_task(adm.admit({"Authorization": "Bearer kg"}, CTX))
    await asyncio.sleep(0)
    assert adm.queue_depth == 2
    capacity.in_flight = 0
    adm.on_capacity_freed()
    await asyncio.sleep(0)
    assert gold.done() and not batch.done()
    capacity.in_flight = 1  # gold took the slot
    batch.cancel()
    await asyncio.gather(batch, return_exceptions=True)
    await adm.stop()
