"""Issue 9: a session whose replica goes down moves to the next on the ring and stays there after
the home recovers (its cache is there now), unless --sticky-return-home."""

from __future__ import annotations

import asyncio
import time

import pytest

from dpserve.http_names import SESSION_HEADER, WORKER_HEADER
from tests.integration.gateway.conftest import chat


async def _worker_of(client, url: str, session: str) -> str:
    headers = {SESSION_HEADER: session}
    async with client.post(url + "/v1/chat/completions", json=chat(), headers=headers) as resp:
        assert resp.status == 200
        await resp.read()
        return resp.headers[WORKER_HEADER]


@pytest.mark.parametrize("return_home", [False, True])
async def test_session_fails_over_and_returns_home_only_if_configured(fake_workers, gateway, client,
                                                                       return_home: bool) -> None:
    workers = await fake_workers(3)
    gw = await gateway(workers, policy="consistent_hash", sticky_return_home=return_home)
    home = await _worker_of(client, gw.url, "conv-42")
    home_worker = workers[int(home[1:])]
    await home_worker.kill()
    moved = await _worker_of(client, gw.url, "conv-42")
    assert moved != home
    assert await _worker_of(client, gw.url, "conv-42") == moved
    await home_worker.revive()
    deadline = time.monotonic() + 2
    while not gw.state.registry.get(home).healthy and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert gw.state.registry.get(home).healthy
    assert await _worker_of(client, gw.url, "conv-42") == (home if return_home else moved)
