"""Stand-in gateways (separate processes, Admission pairs) on one real Redis enforce one limit together."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpserve.gateway.admission import Admission, AdmissionConfig, AdmissionContext, build_admission
from dpserve.gateway.admission.rejection import Rejection

from .quota_client import AlwaysRoom
from .redis_server import RedisServer

CTX = AdmissionContext(8, 4)
ROOT = Path(__file__).resolve().parents[3]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _two_gateways(redis_server: RedisServer, keys_file: Path) -> tuple[Admission, Admission]:
    """Two started Admissions sharing one Redis, as two gateway processes would (callers stop them)."""
    cfg = AdmissionConfig(api_keys=keys_file, redis_url=redis_server.url)
    first, second = (build_admission(cfg, AlwaysRoom()) for _ in range(2))
    await first.start()
    await second.start()
    return first, second


def test_two_processes_share_requests_per_minute(redis_server: RedisServer, keys_file: Path) -> None:
    start_at = time.time() + 3.0  # both processes import, connect, then fire together
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.integration.admission.quota_client", redis_server.url,
         str(keys_file), key, "60", str(start_at)], cwd=ROOT, stdout=subprocess.PIPE)
        for key in ("k-limited", "k-limited-2")]  # two keys of one tenant, one per process
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    admitted = sum(r["admitted"] for r in results)
    # Limit 30/min: a full bucket of 30, plus refill at 0.5/s while the burst runs (a few seconds at most).
    assert 30 <= admitted <= 33, results
    assert all(r["admitted"] > 0 for r in results), results  # both processes took part
    assert sum(r["rejected"] for r in results) == 120 - admitted


async def test_tenant_at_limit_does_not_slow_other_tenants(redis_server: RedisServer,
                                                           keys_file: Path) -> None:
    first, second = await _two_gateways(redis_server, keys_file)
    busy_admitted = 0
    for i in range(20):
        gate = first if i % 2 else second
        try:
            (await gate.admit(_auth("k-busy"), CTX)).release(1, 1)
            busy_admitted += 1
        except Rejection as exc:
            assert exc.status == 429 and "requests_per_minute limit (5)" in exc.message
            assert int(exc.headers["Retry-After"]) >= 1
        free = await (second if i % 2 else first).admit(_auth("k-free"), CTX)
        assert free.queue_wait_s == 0.0
        free.release(1, 1)
    assert busy_admitted == 5
    await first.stop()
    await second.stop()


async def test_concurrency_slots_are_cluster_wide_and_released(redis_server: RedisServer,
                                                               keys_file: Path) -> None:
    first, second = await _two_gateways(redis_server, keys_file)
    held = [await first.admit(_auth("k-busy"), CTX) for _ in range(2)]
    held.append(await second.admit(_auth("k-busy"), CTX))
    with pytest.raises(Rejection, match=r"max_concurrency limit \(3\)"):
        await second.admit(_auth("k-busy"), CTX)
    held[0].release(1, 1)
    await first.stop()  # waits for the release to reach Redis
    assert (await second.admit(_auth("k-busy"), CTX)).lease_id is not None
    await second.stop()


async def test_tokens_per_minute_charged_across_gateways(redis_server: RedisServer,
                                                         keys_file: Path) -> None:
    first, second = await _two_gateways(redis_server, keys_file)
    (await first.admit(_auth("k-tokens"), CTX)).release(80, 70)  # 150 > 100 per minute
    await first.stop()
    with pytest.raises(Rejection, match="tokens_per_minute") as info:
        await second.admit(_auth("k-tokens"), CTX)
    assert info.value.status == 429
    await second.stop()

