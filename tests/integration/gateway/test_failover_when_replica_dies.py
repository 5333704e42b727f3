"""Issue 9: a replica killed under load costs no client request; it leaves rotation at once
and comes back after recovery; retries never go back to the replica that just failed."""

from __future__ import annotations

import asyncio
import time

from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import chat


async def _post(client, url: str, body: dict) -> tuple[int, str | None]:
    async with client.post(url + "/v1/chat/completions", json=body) as resp:
        await resp.read()
        return resp.status, resp.headers.get(WORKER_HEADER)


async def test_kill_during_500_requests_zero_client_failures(fake_workers, gateway, client) -> None:
    workers = await fake_workers(3, slow_first_byte_s=0.005)
    gw = await gateway(workers, policy="cache_aware", max_retries=3)
    victim = workers[1]
    sem = asyncio.Semaphore(32)
    done = 0

    async def one(i: int) -> int:
        nonlocal done
        async with sem:
            status, _ = await _post(client, gw.url, chat(f"request {i} " + "x" * (i % 50)))
            done += 1
            return status

    tasks = [asyncio.create_task(one(i)) for i in range(500)]
    while done < 150:
        await asyncio.sleep(0.005)
    killed_at = time.monotonic()
    await victim.kill()
    out_at = None
    while out_at is None and time.monotonic() - killed_at < 2:
        if not gw.state.registry.get("w1").healthy:
            out_at = time.monotonic()
        await asyncio.sleep(0.005)
    statuses = await asyncio.gather(*tasks)
    assert statuses.count(200) == 500
    assert out_at is not None and out_at - killed_at < 1.0
    await victim.revive()
    back_by = time.monotonic() + 2.0
    while not gw.state.registry.get("w1").healthy and time.monotonic() < back_by:
        await asyncio.sleep(0.01)
    assert gw.state.registry.get("w1").healthy


async def test_retry_never_returns_to_the_failed_cached_replica(fake_workers, gateway, client) -> None:
    workers = await fake_workers(2)
    gw = await gateway(workers, policy="cache_aware", max_retries=1)
    body = chat("a long cached prompt " * 20)
    _, home = await _post(client, gw.url, body)
    home_worker = workers[int(home[1:])]
    home_worker.knobs.fail_first_n = 5  # 503 "busy" again and again
    status, served_by = await _post(client, gw.url, body)
    assert status == 200 and served_by != home
    assert home_worker.stats.requests == 2  # the cached hit once, then the retry went elsewhere
    await home_worker.kill()
    status, served_by = await _post(client, gw.url, body)
    assert status == 200 and served_by != home


async def test_503s_are_retried_on_the_only_replica(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1, fail_first_n=2)
    gw = await gateway([w], max_retries=3)
    assert (await _post(client, gw.url, chat()))[0] == 200
    assert w.stats.requests == 3
    async with client.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    assert 'dpserve_retries_total{reason="status_503"} 2' in text


async def test_retries_exhausted_returns_the_replica_error(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1, fail_first_n=10, fail_status=429)
    gw = await gateway([w], max_retries=2)
    async with client.post(gw.url + "/v1/chat/completions", json=chat()) as resp:
        assert resp.status == 429 and resp.headers[WORKER_HEADER] == "w0"
        assert (await resp.json())["error"]["type"] == "rate_limit_error"
    assert w.stats.requests == 3


async def test_no_healthy_replica_503_at_once_and_readiness(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1)
    gw = await gateway([w])
    async with client.get(gw.url + "/readiness") as resp:
        assert resp.status == 200
    await w.kill()
    await _post(client, gw.url, chat())  # refused → out of rotation at once (retry finds no one)
    started = time.monotonic()
    async with client.post(gw.url + "/v1/chat/completions", json=chat()) as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["type"] == "service_unavailable_error"
    assert time.monotonic() - started < 0.5
    async with client.get(gw.url + "/readiness") as resp:
        assert resp.status == 503
    async with client.get(gw.url + "/health") as resp:
        assert resp.status == 200


async def test_empty_fleet_is_not_ready_and_answers_503(gateway, client) -> None:
    gw = await gateway([])
    async with client.post(gw.url + "/v1/completions", json={"prompt": "x"}) as resp:
        assert resp.status == 503
    async with client.get(gw.url + "/readiness") as resp:
        assert resp.status == 503
