"""`dpserve engine` over real HTTP: disconnect frees the request, prefix cache in usage and /metrics,
clear 4xx errors."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import free_port
from tests.support import dpserve_process

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(bundled_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("engine") / "engine.log"
    args = ["engine", "--port", str(port), "--kv-cache-tokens", "8192", "--max-num-batched-tokens", "512"]
    with dpserve_process(args, port, log_path=log, timeout_s=180):
        yield f"http://127.0.0.1:{port}"


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    match = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


async def wait_metric(session: aiohttp.ClientSession, url: str, name: str, value: float,
                      timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (current := await metric(session, url, name)) != value:
        assert time.monotonic() < deadline, f"{name} stayed at {current}, expected {value}"
        await asyncio.sleep(0.05)


async def stream_ttft(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[float, dict]:
    """Time to the first content chunk, and the usage chunk, of a streamed chat completion."""
    start = time.monotonic()
    ttft = None
    usage: dict[str, Any] = {}
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        async for line in resp.content:
            if line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                if ttft is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    ttft = time.monotonic() - start
                usage = chunk.get("usage") or usage
    assert ttft is not None
    return ttft, usage


async def test_disconnect_mid_stream_frees_the_request(server: str) -> None:
    body = {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 2000,
            "ignore_eos": True, "stream": True}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(f"{server}/v1/chat/completions", json=body)
        chunks = 0
        async for line in resp.content:
            chunks += line.startswith(b"data: ")
            if chunks >= 3:
                break
        assert await metric(session, server, "vllm:num_requests_running") == 1
        resp.close()  # drop the connection mid-stream
        await wait_metric(session, server, "vllm:num_requests_running", 0)
        await wait_metric(session, server, "vllm:kv_cache_usage_perc", 0)


async def test_repeated_long_prompt_is_served_from_prefix_cache(server: str) -> None:
    text = " ".join(f"Item {i} costs {i * 3} dollars and weighs {i % 7} kilograms." for i in range(120))
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": 2, "temperature": 0}
    async with aiohttp.ClientSession() as session:
        hits_before = await metric(session, server, "vllm:prefix_cache_hits_total")
        cold_ttft, cold_usage = await stream_ttft(session, server, body)
        warm_ttft, warm_usage = await stream_ttft(session, server, body)
        hits_after = await metric(session, server, "vllm:prefix_cache_hits_total")
    prompt_tokens = cold_usage["prompt_tokens"]
    assert prompt_tokens > 1000
    assert cold_usage["prompt_tokens_details"]["cached_tokens"] < 64  # at most the shared system prompt
    cached = warm_usage["prompt_tokens_details"]["cached_tokens"]
    assert prompt_tokens - 16 <= cached < prompt_tokens
    assert hits_after - hits_before == cached + cold_usage["prompt_tokens_details"]["cached_tokens"]
    # >1000 prompt tokens of prefill vs one block: a >10x gap, asserted with a wide margin
    assert warm_ttft < cold_ttft


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"model": "nope", "prompt": "hi"}, 404, "nope"),
    ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "hi " * 9000, "max_tokens": 4}, 400, "8192"),
    ({"prompt": "hi", "temperature": -1}, 400, "temperature"),
    ({"prompt": [49152]}, 400, "49152"),
])
async def test_bad_input_gets_a_clear_4xx(server: str, body: dict[str, Any], status: int,
                                          needle: str) -> None:
    async with aiohttp.ClientSession() as session, \
            session.post(f"{server}/v1/completions", json=body) as resp:
        payload = await resp.json()
    assert resp.status == status
    assert needle in payload["error"]["message"]


async def test_served_model_name_defaults_to_model_flag(server: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{server}/v1/models") as resp:
        models = await resp.json()
    assert [m["id"] for m in models["data"]] == ["smollm2-135m"]
