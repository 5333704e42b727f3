"""A large prompt body is tokenised on a worker thread: /health answers meanwhile, the answer is the same."""

from __future__ import annotations

import asyncio
import re

import aiohttp

# Well above what one tokenising step of the event loop could absorb unnoticed.
LARGE_BODY_BYTES = 64 * 1024


async def test_large_prompt_gets_the_context_error_while_health_answers(sim_url: str) -> None:
    words = LARGE_BODY_BYTES // 4 + 1000  # "abc " per word
    body = {"prompt": "abc " * words, "max_tokens": 4}
    async with aiohttp.ClientSession() as session:
        post = asyncio.ensure_future(session.post(f"{sim_url}/v1/completions", json=body))
        async with session.get(f"{sim_url}/health", timeout=aiohttp.ClientTimeout(total=5)) as health:
            assert health.status == 200
        async with await post as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
    assert "maximum context length is 4096" in error["message"]
    prompt_tokens = int(re.search(r"your prompt has (\d+) tokens", error["message"]).group(1))  # type: ignore[union-attr]
    assert prompt_tokens >= words


async def test_large_prompt_within_context_is_served(sim_url: str) -> None:
    # Long whitespace padding keeps the token count small while the body is large.
    prompt = "hello" + " " * (LARGE_BODY_BYTES + 10) + "world"
    async with aiohttp.ClientSession() as session, session.post(f"{sim_url}/v1/completions",
                            json={"prompt": prompt, "max_tokens": 3, "temperature": 0}) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
    assert data["usage"]["completion_tokens"] == 3
    assert data["usage"]["prompt_tokens"] < 100
