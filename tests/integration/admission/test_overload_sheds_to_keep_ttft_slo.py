"""3× overload through the real gateway on simulated replicas: admitted requests meet the TTFT SLO,
the rest get 429 quickly (refused at admission, not after waiting)."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import aiohttp
import pytest

from .overload import SLOTS_PER_REPLICA, drive, overloaded_fleet

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("dpserve.gateway.command") is None
                       or importlib.util.find_spec("dpserve.sim.command") is None,
                       reason="needs the gateway (dpserve router) and dpserve sim"),
]

SLO_MS = 2000.0
DURATION_S = 8.0


@pytest.mark.parametrize("capped", [True, False], ids=["with-inflight-cap", "slo-only"])
async def test_overload_keeps_admitted_ttft_within_slo(tmp_path: Path, capped: bool) -> None:
    flags = ["--ttft-slo-ms", str(SLO_MS), "--queue-size", "256"]
    if capped:
        flags += ["--max-inflight-per-worker", str(SLOTS_PER_REPLICA)]
    with overloaded_fleet(flags, tmp_path) as url:
        out = await drive(url, DURATION_S)
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
            metrics = await resp.text()
    assert out.other_status == []
    assert len(out.ttft_s) >= SLOTS_PER_REPLICA  # the fleet was kept busy
    assert out.rejected_s, "3x overload should shed some requests"
    assert out.rejections_without_retry_after == 0
    assert max(out.ttft_s) * 1000 <= SLO_MS, sorted(out.ttft_s)[-5:]
    # Shedding happens at admission, not after waiting out the SLO: 429s come back fast.
    assert statistics.median(out.rejected_s) * 1000 <= SLO_MS / 4, sorted(out.rejected_s)[-5:]
    assert 'dpserve_admission_rejected_total{reason="slo_shed",tenant="default"}' in metrics
