"""`dpserve router` as a process: serves, finishes in-flight streams on SIGTERM, then exits;
the admission seam caps in-flight per worker; /metrics carries gateway and admission series."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from tests.integration.gateway.conftest import chat, start_router_process


async def test_sigterm_finishes_in_flight_stream_then_exits(fake_workers, client) -> None:
    [w] = await fake_workers(1, chunks=30, chunk_delay_s=0.02)
    proc, url = await start_router_process(w.url)
    try:
        async with client.post(url + "/v1/chat/completions", json=chat(stream=True)) as resp:
            first = await resp.content.readany()
            os.kill(proc.pid, signal.SIGTERM)
            rest = await resp.read()
        assert (first + rest).endswith(b"data: [DONE]\n\n") and w.stats.finished == 1
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_bad_flags_exit_2(client) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dpserve", "router", "--policy", "nope",
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2 and b"--policy" in err


async def test_admission_cap_sheds_with_429_and_metrics(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1, slow_first_byte_s=0.3)
    gw = await gateway([w], max_inflight_per_worker=2, queue_size=0)

    async def status() -> int:
        async with client.post(gw.url + "/v1/chat/completions", json=chat()) as resp:
            await resp.read()
            if resp.status == 429:
                assert "Retry-After" in resp.headers
            return resp.status
    statuses = await asyncio.gather(*(status() for _ in range(5)))
    assert sorted(statuses) == [200, 200, 429, 429, 429]
    assert w.stats.requests == 2
    async with client.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    for series in ('dpserve_requests_total{worker="w0",status="200"} 2',
                   'dpserve_policy_decisions_total{policy="cache_aware",reason="cache_miss"}',
                   "dpserve_cache_tree_chars ", "dpserve_request_duration_seconds_count 2",
                   'dpserve_worker_healthy{worker="w0"} 1', "dpserve_admission"):
        assert series in text, series


async def test_api_keys_are_checked_before_anything_else(fake_workers, gateway, client, tmp_path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - key: sk-good\n    tenant: team-a\n")
    [worker] = await fake_workers(1)
    gw = await gateway([worker], api_keys=keys)
    async with client.get(gw.url + "/v1/models") as resp:
        assert resp.status == 401
    async with client.post(gw.url + "/v1/chat/completions", data=b"{not json") as resp:
        assert resp.status == 401  # not 400: an unauthenticated client learns nothing about its body
    good = {"Authorization": "Bearer sk-good"}
    async with client.get(gw.url + "/v1/models", headers=good) as resp:
        assert resp.status == 200
    async with client.post(gw.url + "/v1/chat/completions", data=b"{not json", headers=good) as resp:
        assert resp.status == 400
    assert worker.stats.requests == 0
