"""A replica serving a model name differently from the others is refused (reason in /workers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from .conftest import RunningGateway
from .fake_worker import FakeWorker

Workers = Callable[..., Awaitable[list[FakeWorker]]]
Gateway = Callable[..., Awaitable[RunningGateway]]


async def _workers(gw: RunningGateway, client: aiohttp.ClientSession) -> list[dict[str, Any]]:
    async with client.get(gw.url + "/workers") as resp:
        return list(await resp.json())


async def test_differing_replica_is_refused_and_never_routed(fake_workers: Workers, gateway: Gateway,
                                                             client: aiohttp.ClientSession) -> None:
    [good] = await fake_workers(1, max_model_len=4096, info='block_size="16",cache_dtype="auto"')
    [short] = await fake_workers(1, max_model_len=2048)
    [fp8] = await fake_workers(1, max_model_len=4096, info='block_size="32",cache_dtype="fp8"')
    gw = await gateway([good])
    for w in (short, fp8):
        async with client.post(gw.url + "/workers", json={"url": w.url}) as resp:
            assert resp.status == 201
    listed = {w["url"]: w for w in await _workers(gw, client)}
    assert listed[good.url]["refused"] is None
    assert "max_model_len 2048 ≠ 4096" in listed[short.url]["refused"]
    assert "cache_dtype fp8 ≠ auto" in listed[fp8.url]["refused"]  # block_size may differ
    for _ in range(6):
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
        async with client.post(gw.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 200 and resp.headers["x-dpserve-worker"] == listed[good.url]["id"]


async def test_allow_heterogeneous_serves_the_mix(fake_workers: Workers, gateway: Gateway,
                                                  client: aiohttp.ClientSession) -> None:
    [a] = await fake_workers(1, max_model_len=4096)
    [b] = await fake_workers(1, max_model_len=2048)
    gw = await gateway([a, b], allow_heterogeneous=True)
    assert all(w["refused"] is None for w in await _workers(gw, client))
