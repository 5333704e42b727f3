"""Replicas serving different models: a request goes only to a replica serving its `model`."""

from __future__ import annotations

import aiohttp

from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import chat


async def test_requests_reach_only_replicas_serving_their_model(fake_workers, gateway, client) -> None:  # type: ignore[no-untyped-def]
    alpha = await fake_workers(2, model="alpha")
    beta = await fake_workers(1, model="beta")
    gw = await gateway([*alpha, *beta], policy="round_robin")
    async with client.get(gw.url + "/v1/models") as resp:
        assert sorted(m["id"] for m in (await resp.json())["data"]) == ["alpha", "beta"]
    for model, serving in (("alpha", alpha), ("beta", beta)):
        urls = set()
        for i in range(6):
            async with client.post(gw.url + "/v1/chat/completions", json=chat(f"q{i}", model=model)) as resp:
                assert resp.status == 200
                urls.add(gw.state.registry.get(resp.headers[WORKER_HEADER]).url)  # type: ignore[union-attr]
        assert urls == {w.url for w in serving}


async def test_a_model_no_replica_serves_gets_404_from_the_gateway(fake_workers, gateway,  # type: ignore[no-untyped-def]
                                                                   client: aiohttp.ClientSession) -> None:
    workers = await fake_workers(2, model="alpha")
    gw = await gateway(workers)
    async with client.post(gw.url + "/v1/chat/completions", json=chat("hi", model="gamma")) as resp:
        assert resp.status == 404
        error = (await resp.json())["error"]
    assert error["code"] == "model_not_found" and "alpha" in error["message"]
    assert sum(w.stats.requests for w in workers) == 0
