"""Policies over real sockets: round robin spreads exactly, cache_aware follows prefixes,
consistent_hash keeps sessions and respects its bound, weights scale shares."""

from __future__ import annotations

import asyncio
from collections import Counter

from dpserve.http_names import SESSION_HEADER, WORKER_HEADER
from tests.integration.gateway.conftest import chat


async def _worker_of(client, url: str, body: dict, headers: dict | None = None) -> str:
    async with client.post(url + "/v1/chat/completions", json=body, headers=headers or {}) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()
        return resp.headers[WORKER_HEADER]


async def test_round_robin_spreads_exactly(fake_workers, gateway, client) -> None:
    workers = await fake_workers(3)
    gw = await gateway(workers, policy="round_robin")
    picks = [await _worker_of(client, gw.url, chat(f"q{i}")) for i in range(30)]
    assert Counter(picks) == {"w0": 10, "w1": 10, "w2": 10}
    assert [w.stats.requests for w in workers] == [10, 10, 10]


async def test_cache_aware_follows_shared_prefix_and_spreads_distinct(fake_workers, gateway, client) -> None:
    workers = await fake_workers(3)
    gw = await gateway(workers, policy="cache_aware", cache_threshold=0.5)
    system = {"role": "system", "content": "You are the assistant of team alpha. " * 10}
    homes = []
    for i in range(5):
        body = {"model": "fake-model", "messages": [system, {"role": "user", "content": f"question {i}"}]}
        homes.append(await _worker_of(client, gw.url, body))
    assert len(set(homes)) == 1
    # Distinct long prefixes sent concurrently spread over the fleet (in-flight makes them differ).
    bodies = [chat(f"topic {i} " + "lorem ipsum " * 30) for i in range(9)]
    for w in workers:
        w.knobs.slow_first_byte_s = 0.2
    picks = await asyncio.gather(*(_worker_of(client, gw.url, b) for b in bodies))
    assert set(picks) == {"w0", "w1", "w2"}


async def test_cache_aware_routes_on_the_whole_conversation(fake_workers, gateway, client) -> None:
    workers = await fake_workers(2)
    gw = await gateway(workers, policy="cache_aware", cache_threshold=0.6)
    first = {"role": "user", "content": "shared opening message " * 5}
    convo_a = [first, {"role": "assistant", "content": "A" * 300}]
    convo_b = [first, {"role": "assistant", "content": "B" * 300}]
    for w in workers:
        w.knobs.slow_first_byte_s = 0.2
    a, b = await asyncio.gather(_worker_of(client, gw.url, {"messages": convo_a}),
                                _worker_of(client, gw.url, {"messages": convo_b}))
    assert a != b  # same first message, different conversations: not glued together
    for w in workers:
        w.knobs.slow_first_byte_s = 0.0
    next_a = [*convo_a, {"role": "user", "content": "next"}]
    assert await _worker_of(client, gw.url, {"messages": next_a}) == a


async def test_consistent_hash_keeps_sessions_and_respects_bound(fake_workers, gateway, client) -> None:
    workers = await fake_workers(4)
    gw = await gateway(workers, policy="consistent_hash", hash_balance_factor=1.25)
    for s in range(8):
        picks = {await _worker_of(client, gw.url, chat(f"t{t}"), {SESSION_HEADER: f"s{s}"})
                 for t in range(3)}
        assert len(picks) == 1
    user_picks = {await _worker_of(client, gw.url, chat("x", user="alice")) for _ in range(3)}
    assert len(user_picks) == 1
    for w in workers:
        w.knobs.slow_first_byte_s = 0.3
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, *(w.in_flight for w in gw.state.registry.all()))
            await asyncio.sleep(0.01)
    watcher = asyncio.create_task(watch())
    picks = await asyncio.gather(*(_worker_of(client, gw.url, chat("hot"), {SESSION_HEADER: "hot"})
                                   for _ in range(16)))
    watcher.cancel()
    assert len(set(picks)) >= 3  # one session's burst overflows along the ring
    assert peak <= -(-1.25 * 16 // 4)


async def test_weights_scale_least_load_share(fake_workers, gateway, client) -> None:
    workers = await fake_workers(2, slow_first_byte_s=0.3)
    gw = await gateway(workers, policy="least_load", worker_weights=(1.0, 3.0))
    picks = await asyncio.gather(*(_worker_of(client, gw.url, chat(f"{i}")) for i in range(16)))
    assert Counter(picks) == {"w0": 4, "w1": 12}
