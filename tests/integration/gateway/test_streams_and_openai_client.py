"""The official openai client works through the gateway, streaming and not; with migration off,
a replica dying mid-stream ends the stream with an SSE error event and [DONE], which the client
raises on (with it on, see test_stream_migration_with_fake_replicas.py)."""

from __future__ import annotations

import asyncio

import openai
import pytest

from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import chat


async def test_openai_client_non_streaming_and_streaming(fake_workers, gateway) -> None:
    [w] = await fake_workers(1, chunks=4)
    gw = await gateway([w])
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as oai:
        resp = await oai.chat.completions.with_raw_response.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}])
        assert resp.headers[WORKER_HEADER] == "w0"
        done = resp.parse()  # streamed from the replica, answered whole (resumable)
        assert done.choices[0].message.content == "".join(f"{w.name}-{i} " for i in range(4))
        assert done.usage is not None and done.usage.completion_tokens == 4
        stream = await oai.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        parts, usage = [], None
        async for chunk in stream:
            parts += [c.delta.content or "" for c in chunk.choices]
            usage = chunk.usage or usage
        assert "".join(parts) == "".join(f"{w.name}-{i} " for i in range(4))
        assert usage is not None and usage.completion_tokens == 4
        models = await oai.models.list()
        assert [m.id for m in models.data] == ["fake-model"]
        legacy = await oai.completions.create(model="fake-model", prompt="abc")
        assert legacy.id == "chatcmpl-1" and legacy.choices[0].text.startswith(f"{w.name}-0 ")


async def test_mid_stream_death_ends_with_error_event_then_done(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1, chunks=10, die_after_chunks=3)
    gw = await gateway([w], stream_migration=False)
    async with client.post(gw.url + "/v1/chat/completions", json=chat(stream=True)) as resp:
        assert resp.status == 200
        data = await resp.read()
    events = [e for e in data.split(b"\n\n") if e]
    assert len(events) == 5  # 3 content chunks, the error, [DONE]
    assert events[3].startswith(b'data: {"error":') and b"mid-stream" in events[3]
    assert events[4] == b"data: [DONE]"
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as oai:
        stream = await oai.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True)
        with pytest.raises(openai.APIError, match="mid-stream"):
            async for _ in stream:
                pass
    assert gw.state.registry.get("w0").in_flight == 0


async def test_stream_retried_before_first_byte_only(fake_workers, gateway, client) -> None:
    dead, good = await fake_workers(2, chunks=3)
    dead.knobs.die_after_chunks = 0  # dies before any byte: retried elsewhere, invisible
    gw = await gateway([dead, good], policy="round_robin", max_retries=1)
    for _ in range(4):
        async with client.post(gw.url + "/v1/chat/completions", json=chat(stream=True)) as resp:
            assert resp.status == 200
            assert (await resp.read()).endswith(b"data: [DONE]\n\n")
            assert resp.headers[WORKER_HEADER] == "w1"


async def test_slow_first_byte_past_timeout_is_504(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1, slow_first_byte_s=5)
    gw = await gateway([w], max_retries=0, first_byte_timeout_s=0.2)
    async with client.post(gw.url + "/v1/chat/completions", json=chat(stream=True)) as resp:
        assert resp.status == 504
        assert (await resp.json())["error"]["code"] == 504


async def test_request_timeout_mid_stream_ends_with_error_event(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1, chunks=200, chunk_delay_s=0.01)
    gw = await gateway([w], request_timeout_s=0.3)
    async with client.post(gw.url + "/v1/chat/completions", json=chat(stream=True)) as resp:
        assert resp.status == 200
        data = await resp.read()
    events = [e for e in data.split(b"\n\n") if e]
    assert b"timed out mid-stream" in events[-2] and events[-1] == b"data: [DONE]"
    assert 5 < len(events) < 100
    for _ in range(100):
        if w.stats.cancelled:
            break
        await asyncio.sleep(0.01)
    assert w.stats.cancelled == 1 and gw.state.registry.get("w0").in_flight == 0


async def test_usage_reaches_admission_tickets(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1, chunks=6)
    gw = await gateway([w])
    async with client.post(gw.url + "/v1/chat/completions",
                           json=chat(stream=True, stream_options={"include_usage": True})) as resp:
        await resp.read()
    async with client.post(gw.url + "/v1/chat/completions", json=chat()) as resp:
        await resp.read()
    async with client.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    completion = [line for line in text.splitlines()
                  if line.startswith("dpserve_tenant_tokens_total") and 'kind="completion"' in line]
    assert completion and completion[0].endswith(" 12"), completion
