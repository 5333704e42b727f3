"""Sim scheduling seen over HTTP: requests wait when KV or sequence slots are full, and a cached
prompt skips its prefill time."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from tests.integration.sim.conftest import SimFactory, metric

pytestmark = pytest.mark.timeout(120)


async def complete(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with s.post(f"{url}/v1/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def max_waiting_while(s: aiohttp.ClientSession, url: str, tasks: list[asyncio.Task[Any]]) -> float:
    peak = 0.0
    while not all(t.done() for t in tasks):
        peak = max(peak, await metric(s, url, "vllm:num_requests_waiting"))
        await asyncio.sleep(0.02)
    return peak


async def test_requests_wait_for_kv_then_all_complete(start_sim: SimFactory) -> None:
    # 512 tokens of KV: one 300-token request at a time.
    with start_sim("--kv-cache-tokens", "512", "--max-model-len", "512") as url:
        async with aiohttp.ClientSession() as s:
            bodies = [{"prompt": list(range(1000 * i, 1000 * i + 250)), "max_tokens": 50, "ignore_eos": True}
                      for i in range(1, 5)]
            tasks = [asyncio.create_task(complete(s, url, b)) for b in bodies]
            peak = await max_waiting_while(s, url, tasks)
            results = [t.result() for t in tasks]
            assert peak >= 1
            assert all(r["usage"]["completion_tokens"] == 50 for r in results)
            assert await metric(s, url, "vllm:kv_cache_usage_perc") == 0


async def test_max_num_seqs_queues_the_rest(start_sim: SimFactory) -> None:
    with start_sim("--max-num-seqs", "1") as url:
        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.create_task(complete(s, url, {"prompt": f"q{i}", "max_tokens": 40}))
                     for i in range(3)]
            assert await max_waiting_while(s, url, tasks) >= 1
            assert all(t.result()["choices"][0]["finish_reason"] == "length" for t in tasks)


async def ttft_s(s: aiohttp.ClientSession, url: str, prompt: list[int]) -> float:
    start = time.monotonic()
    body = {"prompt": prompt, "max_tokens": 2, "stream": True}
    async with s.post(f"{url}/v1/completions", json=body) as resp:
        async for line in resp.content:
            if line.startswith(b"data: {") and json.loads(line[6:])["choices"][0]["text"]:
                return time.monotonic() - start
    raise AssertionError("no token streamed")


async def test_cached_prompt_has_lower_ttft(start_sim: SimFactory) -> None:
    # Real time: a 6000-token prefill is modelled at ~187 ms, a cached one at ~7 ms.
    with start_sim("--time-scale", "1") as url:
        async with aiohttp.ClientSession() as s:
            prompt = list(range(100, 6100))
            cold = await ttft_s(s, url, prompt)
            warm = await ttft_s(s, url, prompt)
    assert cold > 0.15
    assert warm < cold / 3
