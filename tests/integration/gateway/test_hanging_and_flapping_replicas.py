"""Issue 9: a hanging replica times out cleanly (504 JSON, upstream cancelled) and leaves rotation;
a flapping replica is held out by its circuit breaker until it really recovers."""

from __future__ import annotations

import asyncio
import time

from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import chat


async def test_hanging_replica_times_out_and_is_taken_out(fake_workers, gateway, client) -> None:
    good, hung = await fake_workers(2)
    gw = await gateway([good, hung], policy="round_robin", max_retries=0, first_byte_timeout_s=0.4,
                       health_check_timeout_s=0.15, health_failure_threshold=2)
    hung.knobs.hang = True
    results = []
    for _ in range(2):
        started = time.monotonic()
        async with client.post(gw.url + "/v1/chat/completions", json=chat()) as resp:
            results.append((resp.status, await resp.json(), time.monotonic() - started))
    timed_out = [r for r in results if r[0] == 504]
    assert len(timed_out) == 1 and [r[0] for r in results].count(200) == 1
    assert timed_out[0][1]["error"]["type"] == "timeout_error" and timed_out[0][2] < 1.5
    deadline = time.monotonic() + 2
    while gw.state.registry.get("w1").healthy and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not gw.state.registry.get("w1").healthy
    assert hung.stats.cancelled >= 1 and hung.stats.active == 0  # the replica's request was cancelled
    for _ in range(6):
        async with client.post(gw.url + "/v1/chat/completions", json=chat()) as resp:
            assert resp.status == 200 and resp.headers[WORKER_HEADER] == "w0"


async def test_hanging_replica_with_retries_is_invisible(fake_workers, gateway, client) -> None:
    good, hung = await fake_workers(2)
    hung.knobs.hang = True
    gw = await gateway([good, hung], policy="round_robin", max_retries=2, first_byte_timeout_s=0.3)
    statuses = await asyncio.gather(*(_status(client, gw.url) for _ in range(6)))
    assert statuses == [200] * 6


async def _status(client, url: str) -> int:
    async with client.post(url + "/v1/chat/completions", json=chat()) as resp:
        await resp.read()
        return resp.status


async def test_flapping_replica_is_held_out_by_the_breaker(fake_workers, gateway, client) -> None:
    good, flaky = await fake_workers(2)
    flaky.knobs.fail_first_n = 1000  # health says fine, requests fail
    gw = await gateway([good, flaky], policy="round_robin", max_retries=2, breaker_failure_threshold=3,
                       breaker_success_threshold=2, breaker_cooldown_s=0.3)
    for _ in range(12):
        assert await _status(client, gw.url) == 200  # retries hide every failure
    assert flaky.stats.requests == 3  # then the circuit opened
    async with client.get(gw.url + "/workers") as resp:
        states = {w["id"]: w["circuit_state"] for w in await resp.json()}
    assert states == {"w0": "closed", "w1": "open"}
    async with client.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    assert 'dpserve_worker_circuit_state{worker="w1"} 1' in text
    assert 'dpserve_circuit_transitions_total{worker="w1",from="closed",to="open"} 1' in text
    await asyncio.sleep(0.35)
    for _ in range(4):
        assert await _status(client, gw.url) == 200
    assert flaky.stats.requests == 4  # half-open: one trial, it failed, open again
    flaky.knobs.fail_first_n = 0
    await asyncio.sleep(0.35)
    for _ in range(8):
        assert await _status(client, gw.url) == 200
    assert gw.state.registry.get("w1").breaker.state.value == "closed"
    assert flaky.stats.requests > 6
