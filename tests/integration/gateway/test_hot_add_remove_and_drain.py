"""Hot add/remove and drain under load lose no request; admin endpoints need the admin key."""

from __future__ import annotations

import asyncio
from collections import Counter

from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import chat


async def _load(client, url: str, n: int, concurrency: int) -> list[tuple[int, str | None]]:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> tuple[int, str | None]:
        async with sem, client.post(url + "/v1/chat/completions", json=chat(f"q{i}")) as resp:
            await resp.read()
            return resp.status, resp.headers.get(WORKER_HEADER)
    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_drain_under_load_loses_nothing(fake_workers, gateway, client) -> None:
    workers = await fake_workers(2, slow_first_byte_s=0.02)
    gw = await gateway(workers, policy="round_robin", max_retries=0)
    load = asyncio.create_task(_load(client, gw.url, 200, 16))
    while workers[0].stats.requests < 20:
        await asyncio.sleep(0.005)
    async with client.delete(gw.url + "/workers/w0") as resp:
        assert resp.status == 204
        assert workers[0].stats.active == 0  # every request it had was finished first
    results = await load
    assert [s for s, _ in results].count(200) == 200
    assert workers[0].stats.cancelled == 0 and workers[0].stats.finished == workers[0].stats.requests
    async with client.get(gw.url + "/workers") as resp:
        assert [w["id"] for w in await resp.json()] == ["w1"]


async def test_hot_add_and_remove_under_load(fake_workers, gateway, client) -> None:
    workers = await fake_workers(3, slow_first_byte_s=0.01)
    gw = await gateway(workers[:2], policy="least_load", max_retries=0)
    load = asyncio.create_task(_load(client, gw.url, 300, 16))
    while sum(w.stats.requests for w in workers) < 60:
        await asyncio.sleep(0.005)
    async with client.post(gw.url + "/workers", json={"url": workers[2].url, "weight": 2}) as resp:
        assert resp.status == 201
        added = await resp.json()
    assert added["id"] == "w2" and added["healthy"] and added["weight"] == 2.0
    while workers[2].stats.requests < 20:
        await asyncio.sleep(0.005)
    async with client.delete(gw.url + "/workers/w0") as resp:
        assert resp.status == 204
    results = await load
    assert [s for s, _ in results].count(200) == 300
    by_worker = Counter(w for _, w in results)
    assert by_worker["w2"] >= 20 and set(by_worker) == {"w0", "w1", "w2"}


async def test_worker_admin_errors_and_admin_key(fake_workers, gateway, client) -> None:
    [w, extra] = await fake_workers(2)
    gw = await gateway([w], admin_key="sekret")
    async with client.post(gw.url + "/workers", json={"url": extra.url}) as resp:
        assert resp.status == 401 and (await resp.json())["error"]["type"] == "authentication_error"
    async with client.delete(gw.url + "/workers/w0", headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401
    auth = {"Authorization": "Bearer sekret"}
    for body in ({"url": "ftp://x"}, {"url": extra.url, "weight": 0}, {"weight": 1}, [1],
                 {"url": extra.url, "weight": 1000}, {"url": extra.url, "weight": "2"},
                 {"url": "http://"}, {"url": "http://127.0.0.1:99999"}, {"url": extra.url + "/v1"}):
        async with client.post(gw.url + "/workers", json=body, headers=auth) as resp:
            assert resp.status == 400, body
    async with client.post(gw.url + "/workers", json={"url": w.url}, headers=auth) as resp:
        assert resp.status == 409
    async with client.delete(gw.url + "/workers/nope", headers=auth) as resp:
        assert resp.status == 404
    async with client.post(gw.url + "/workers", json={"url": extra.url}, headers=auth) as resp:
        assert resp.status == 201
    await extra.kill()
    async with client.post(gw.url + "/workers", json={"url": "http://127.0.0.1:9"}, headers=auth) as resp:
        assert resp.status == 201 and (await resp.json())["healthy"] is False  # added, out of rotation
    async with client.delete(gw.url + "/workers/w2", headers=auth) as resp:
        assert resp.status == 204
    async with client.get(gw.url + "/get_loads") as resp:
        assert resp.status == 401  # with an admin key, the fleet views need it too
    async with client.get(gw.url + "/get_loads", headers=auth) as resp:
        loads = (await resp.json())["workers"]
    assert [x["id"] for x in loads] == ["w0", "w1"] and all("load" in x for x in loads)
