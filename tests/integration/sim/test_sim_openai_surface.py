"""A real `dpserve sim` answers the OpenAI surface: chat and completions, stream and not, exact
usage, stop strings, cached tokens on a repeated prompt, /metrics moving — via aiohttp and the
official openai client."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import openai
import pytest

from dpserve.sim.tokenizer import SimTokenizer
from tests.integration.sim.conftest import metric, read_sse

pytestmark = pytest.mark.timeout(120)
MODEL = "smollm2-135m"
TOK = SimTokenizer()


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


async def post(session: aiohttp.ClientSession, url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(f"{url}{path}", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def test_health_and_models(sim_url: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{sim_url}/health") as resp:
            assert resp.status == 200
        async with s.get(f"{sim_url}/v1/models") as resp:
            body = await resp.json()
    assert [m["id"] for m in body["data"]] == [MODEL]


async def test_chat_non_stream_shape_and_exact_usage(sim_url: str) -> None:
    messages = user("Tell me about the sea, please.")
    async with aiohttp.ClientSession() as s:
        body = await post(s, sim_url, "/v1/chat/completions",
                          {"model": MODEL, "messages": messages, "max_tokens": 7})
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 7
    prompt_tokens = len(TOK.apply_chat_template(messages))
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 7,
                             "total_tokens": prompt_tokens + 7, "prompt_tokens_details": {"cached_tokens": 0}}


async def test_chat_stream_with_usage_matches_non_stream(sim_url: str) -> None:
    req = {"messages": user("stream me"), "max_tokens": 9, "seed": 5}
    async with aiohttp.ClientSession() as s:
        full = await post(s, sim_url, "/v1/chat/completions", req)
        stream_body = {**req, "stream": True, "stream_options": {"include_usage": True}}
        async with s.post(f"{sim_url}/v1/chat/completions", json=stream_body) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            chunks, done = await read_sse(resp)
    assert done
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == full["choices"][0]["message"]["content"]
    assert len(chunks) > 4  # streamed step by step, not in one piece
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9
    assert chunks[-1]["usage"]["prompt_tokens"] == full["usage"]["prompt_tokens"]


async def test_completions_string_and_token_ids(sim_url: str) -> None:
    async with aiohttp.ClientSession() as s:
        body = await post(s, sim_url, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 3})
        by_ids = await post(s, sim_url, "/v1/completions", {"prompt": [11, 12, 13, 14, 15]})
        async with s.post(f"{sim_url}/v1/completions",
                          json={"prompt": "abc", "max_tokens": 4, "stream": True}) as resp:
            chunks, done = await read_sse(resp)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["usage"]["prompt_tokens"] == len(TOK.encode("Once upon a time"))
    assert len(body["choices"][0]["text"].split()) == 3
    assert by_ids["usage"]["prompt_tokens"] == 5 and by_ids["usage"]["completion_tokens"] == 16
    assert done and all(c["object"] == "text_completion" for c in chunks)
    assert "usage" not in chunks[-1]  # no include_usage → no usage chunk


async def test_stop_string_cuts_output_and_is_excluded(sim_url: str) -> None:
    req = {"messages": user("stop test"), "max_tokens": 12, "seed": 11}
    async with aiohttp.ClientSession() as s:
        full = (await post(s, sim_url, "/v1/chat/completions", req))["choices"][0]["message"]["content"]
        words = full.split()
        stop = f"{words[3][:2]}"  # starts inside the 4th word
        cut = await post(s, sim_url, "/v1/chat/completions", {**req, "stop": [stop]})
        stream_req = {**req, "stop": stop, "stream": True}
        async with s.post(f"{sim_url}/v1/chat/completions", json=stream_req) as resp:
            chunks, _ = await read_sse(resp)
    expected = full[:full.index(stop)]
    assert cut["choices"][0]["message"]["content"] == expected
    assert cut["choices"][0]["finish_reason"] == "stop" and cut["choices"][0]["stop_reason"] == stop
    assert cut["usage"]["completion_tokens"] < 12
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == expected and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"][0]["stop_reason"] == stop


async def test_repeated_prompt_reports_cached_tokens_and_metrics_move(sim_url: str) -> None:
    long_text = " ".join(f"word{i}" for i in range(300)) + uuid.uuid4().hex
    req = {"messages": user(long_text), "max_tokens": 2}
    async with aiohttp.ClientSession() as s:
        hits_before = await metric(s, sim_url, "vllm:prefix_cache_hits_total")
        queries_before = await metric(s, sim_url, "vllm:prefix_cache_queries_total")
        gen_before = await metric(s, sim_url, "vllm:generation_tokens_total")
        count_before = await metric(s, sim_url, "vllm:e2e_request_latency_seconds_count")
        first = await post(s, sim_url, "/v1/chat/completions", req)
        second = await post(s, sim_url, "/v1/chat/completions", req)
        prompt_tokens = first["usage"]["prompt_tokens"]
        cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert cached == (prompt_tokens - 1) // 16 * 16 and cached > 250
        assert await metric(s, sim_url, "vllm:prefix_cache_hits_total") - hits_before == cached
        queries = await metric(s, sim_url, "vllm:prefix_cache_queries_total")
        assert queries - queries_before == 2 * prompt_tokens
        assert await metric(s, sim_url, "vllm:generation_tokens_total") - gen_before == 4
        assert await metric(s, sim_url, "vllm:e2e_request_latency_seconds_count") - count_before == 2
        assert await metric(s, sim_url, "vllm:num_requests_running") == 0


async def test_official_openai_client(sim_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{sim_url}/v1", api_key="unused")
    try:
        chat = await client.chat.completions.create(model=MODEL, messages=user("hi"),
                                                    max_tokens=4)
        assert chat.choices[0].message.content and chat.usage and chat.usage.completion_tokens == 4
        stream = await client.chat.completions.create(
            model=MODEL, messages=user("hi"), max_tokens=5, stream=True,
            stream_options={"include_usage": True})
        parts, usage = [], None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            if chunk.usage:
                usage = chunk.usage
        assert len("".join(parts).split()) == 5 and usage and usage.total_tokens == usage.prompt_tokens + 5
        comp = await client.completions.create(model=MODEL, prompt="Say", max_tokens=3)
        assert comp.choices[0].finish_reason == "length" and comp.usage and comp.usage.completion_tokens == 3
        with pytest.raises(openai.NotFoundError):
            await client.completions.create(model="nope", prompt="x")
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model=MODEL, messages=user("x"), n=2)
    finally:
        await client.close()


async def test_answer_without_max_tokens_ends_naturally_with_stop(sim_url: str) -> None:
    async with aiohttp.ClientSession() as s:
        body = await post(s, sim_url, "/v1/chat/completions", {"messages": user("free length"), "seed": 1})
    assert body["choices"][0]["finish_reason"] == "stop"
    assert 128 <= body["usage"]["completion_tokens"] <= 384  # --natural-output-len 256 by default


async def test_multi_turn_history_hits_the_prefix_cache(sim_url: str) -> None:
    history = user("multi turn " + uuid.uuid4().hex + " please answer at length")
    async with aiohttp.ClientSession() as s:
        first = await post(s, sim_url, "/v1/chat/completions", {"messages": history, "max_tokens": 40})
        reply = first["choices"][0]["message"]["content"]
        history = [*history, {"role": "assistant", "content": reply}, {"role": "user", "content": "more"}]
        second = await post(s, sim_url, "/v1/chat/completions", {"messages": history, "max_tokens": 4})
    # The KV of turn 1 holds its prompt and all but the last generated token.
    computed = first["usage"]["prompt_tokens"] + 40 - 1
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == computed // 16 * 16
    assert second["usage"]["prompt_tokens"] == len(TOK.apply_chat_template(history))
