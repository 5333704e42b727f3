"""A client that disconnects mid-stream (or mid non-stream request) frees its request at once."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.integration.sim.conftest import SimFactory, metric

pytestmark = pytest.mark.timeout(120)


async def wait_metric(session: aiohttp.ClientSession, url: str, name: str, value: float,
                      labels: str = "", timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (current := await metric(session, url, name, labels)) != value:
        assert time.monotonic() < deadline, f"{name} stayed at {current}, expected {value}"
        await asyncio.sleep(0.05)


async def test_disconnect_mid_stream_returns_running_to_zero(sim_url: str) -> None:
    body = {"messages": [{"role": "user", "content": "long"}], "max_tokens": 3000, "stream": True,
            "ignore_eos": True}
    async with aiohttp.ClientSession() as s:
        aborted_before = await metric(s, sim_url, "vllm:request_success_total", ',finished_reason="abort"')
        streams = []
        for _ in range(3):
            resp = await s.post(f"{sim_url}/v1/chat/completions", json=body)
            await resp.content.readline()  # the stream has started
            streams.append(resp)
        await wait_metric(s, sim_url, "vllm:num_requests_running", 3)
        assert await metric(s, sim_url, "vllm:kv_cache_usage_perc") > 0
        for resp in streams:
            resp.close()  # drop the connection
        await wait_metric(s, sim_url, "vllm:num_requests_running", 0)
        assert await metric(s, sim_url, "vllm:kv_cache_usage_perc") == 0
        await wait_metric(s, sim_url, "vllm:request_success_total", aborted_before + 3,
                          ',finished_reason="abort"')


async def test_disconnect_during_non_stream_request_aborts_it(sim_url: str) -> None:
    body = {"messages": [{"role": "user", "content": "long too"}], "max_tokens": 3000,
            "ignore_eos": True}
    async with aiohttp.ClientSession() as s:
        task = asyncio.create_task(s.post(f"{sim_url}/v1/chat/completions", json=body))
        await wait_metric(s, sim_url, "vllm:num_requests_running", 1)
        task.cancel()
        await wait_metric(s, sim_url, "vllm:num_requests_running", 0)


async def test_disconnect_while_queued_removes_the_waiting_request(start_sim: SimFactory) -> None:
    long = {"prompt": "busy", "max_tokens": 3000, "ignore_eos": True, "stream": True}
    with start_sim("--max-num-seqs", "1") as url:
        async with aiohttp.ClientSession() as s:
            running = await s.post(f"{url}/v1/completions", json=long)
            await running.content.readline()
            queued = asyncio.create_task(s.post(f"{url}/v1/completions", json={**long, "prompt": "wait"}))
            await wait_metric(s, url, "vllm:num_requests_waiting", 1)
            queued.cancel()  # the client gives up before its first byte
            await wait_metric(s, url, "vllm:num_requests_waiting", 0)
            assert await metric(s, url, "vllm:num_requests_running") == 1
            running.close()
            await wait_metric(s, url, "vllm:num_requests_running", 0)
