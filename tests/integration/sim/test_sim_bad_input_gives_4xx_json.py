"""Every kind of bad client input gets the right 4xx with an OpenAI-style JSON error, never a 500."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.timeout(120)
MSGS = [{"role": "user", "content": "hi"}]

CASES: list[tuple[str, str, Any, int, str]] = [
    # (name, path, body (bytes = raw), status, text the message must contain)
    ("malformed json", "/v1/chat/completions", b'{"messages": [', 400, "not valid JSON"),
    ("empty body", "/v1/chat/completions", b"", 400, "empty"),
    ("non-object body", "/v1/chat/completions", b"[1, 2]", 400, "JSON object"),
    ("unknown model", "/v1/chat/completions", {"model": "gpt-9", "messages": MSGS}, 404, "gpt-9"),
    ("missing messages", "/v1/chat/completions", {"model": "smollm2-135m"}, 400, "messages"),
    ("bad message", "/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "content"),
    ("missing prompt", "/v1/completions", {"max_tokens": 3}, 400, "prompt"),
    ("batched prompt", "/v1/completions", {"prompt": ["a", "b"]}, 400, "batched"),
    ("token id out of vocab", "/v1/completions", {"prompt": [1, 10**9]}, 400, "out of range"),
    ("max_tokens 0", "/v1/chat/completions", {"messages": MSGS, "max_tokens": 0}, 400, "max_tokens"),
    ("n 2", "/v1/chat/completions", {"messages": MSGS, "n": 2}, 400, "n=2"),
    ("negative temperature", "/v1/completions", {"prompt": "x", "temperature": -1}, 400, "temperature"),
    ("top_p 0", "/v1/completions", {"prompt": "x", "top_p": 0}, 400, "top_p"),
    ("top_k 0", "/v1/completions", {"prompt": "x", "top_k": 0}, 400, "top_k"),
    ("stop not string", "/v1/completions", {"prompt": "x", "stop": {"a": 1}}, 400, "stop"),
    ("prompt too long", "/v1/completions", {"prompt": list(range(5, 5000))}, 400, "4995 tokens"),
    ("prompt + max_tokens too long", "/v1/completions", {"prompt": list(range(5, 4000)), "max_tokens": 200},
     400, "4195 tokens"),
]


@pytest.mark.parametrize(("name", "path", "body", "status", "needle"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input(sim_url: str, name: str, path: str, body: Any, status: int, needle: str) -> None:
    kwargs = {"data": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body}
    async with aiohttp.ClientSession() as s, s.post(f"{sim_url}{path}", **kwargs) as resp:
        assert resp.status == status
        assert resp.content_type == "application/json"
        error = (await resp.json())["error"]
    assert needle in error["message"]
    assert error["type"] in ("invalid_request_error", "not_found_error")
    assert "code" in error


async def test_context_error_names_both_token_counts(sim_url: str) -> None:
    async with aiohttp.ClientSession() as s, s.post(
            f"{sim_url}/v1/completions", json={"prompt": list(range(5, 5000))}) as resp:
        message = (await resp.json())["error"]["message"]
    assert "4096" in message and "4995" in message


async def test_unknown_route_and_method_are_json(sim_url: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{sim_url}/v1/nothing") as resp:
            assert resp.status == 404 and "error" in await resp.json()
        async with s.get(f"{sim_url}/v1/chat/completions") as resp:
            assert resp.status == 405 and "error" in await resp.json()
