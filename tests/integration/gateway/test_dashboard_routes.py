"""GET /dashboard and /dashboard/data on a running gateway: page and JSON, the admin key, launcher
names and restart counts, bad parameters as 400 JSON."""

from __future__ import annotations

from tests.integration.gateway.conftest import chat, eventually


async def test_page_and_data_describe_every_worker(fake_workers, gateway, client) -> None:
    workers = await fake_workers(2, running=3, waiting=1)
    gw = await gateway(workers)
    for i in range(4):
        async with client.post(gw.url + "/v1/chat/completions", json=chat(f"q{i}")) as resp:
            assert resp.status == 200
    async with client.get(gw.url + "/dashboard") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "script-src 'sha256-" in resp.headers["Content-Security-Policy"]
        assert "<title>dpserve" in await resp.text()
    await eventually(lambda: gw.state.dashboard.sampler.latest is not None
                     and gw.state.dashboard.sampler.latest.fleet.decisions_total.get("cache_miss", 0)
                     + gw.state.dashboard.sampler.latest.fleet.decisions_total.get("cache_hit", 0) == 4,
                     timeout_s=5.0)
    async with client.get(gw.url + "/dashboard/data") as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert [r["id"] for r in doc["replicas"]] == ["w0", "w1"]
    assert all(r["healthy"] and r["circuit_state"] == "closed" for r in doc["replicas"])
    assert [(r["running"], r["waiting"]) for r in doc["replicas"]] == [(3.0, 1.0), (3.0, 1.0)]
    assert sum(r["requests"] for r in doc["replicas"]) == 4
    assert doc["diagnosis"]["state"] in ("replica_bound", "imbalanced", "ok")


async def test_with_an_admin_key_the_data_needs_it_and_the_page_does_not(fake_workers, gateway,
                                                                        client) -> None:
    gw = await gateway(await fake_workers(1), admin_key="s3cret")
    async with client.get(gw.url + "/dashboard/data") as resp:
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_admin_key"
    async with client.get(gw.url + "/dashboard/data", headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 401
    async with client.get(gw.url + "/dashboard/data", headers={"Authorization": "Bearer s3cret"}) as resp:
        assert resp.status == 200 and len((await resp.json())["replicas"]) == 1
    async with client.get(gw.url + "/dashboard") as resp:  # the static page; it asks for the key
        assert resp.status == 200


async def test_a_launcher_named_worker_shows_its_name_and_restarts(fake_workers, gateway, client) -> None:
    gw = await gateway([])
    [w] = await fake_workers(1)
    body = {"url": w.url, "name": "r7", "restarts": 2}
    async with client.post(gw.url + "/workers", json=body) as resp:
        assert resp.status == 201
        added = await resp.json()
    assert (added["name"], added["restarts"]) == ("r7", 2)
    async with client.get(gw.url + "/dashboard/data?series=0") as resp:
        [row] = (await resp.json())["replicas"]
    assert (row["label"], row["id"], row["restarts"]) == ("r7", added["id"], 2)
    async with client.post(gw.url + "/workers", json={"url": "http://127.0.0.1:1", "name": "<b>"}) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["param"] == "name"


async def test_a_bad_since_is_a_400_json_error(fake_workers, gateway, client) -> None:
    gw = await gateway(await fake_workers(1))
    async with client.get(gw.url + "/dashboard/data?since=-5") as resp:
        assert resp.status == 400 and (await resp.json())["error"]["param"] == "since"
