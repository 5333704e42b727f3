"""Streaming and non-streaming relay: byte-exact, x-dpserve-worker on every response, JSON errors."""

from __future__ import annotations

import asyncio

from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import chat
from tests.integration.gateway.fake_worker import completion_body, stream_chunks


async def test_stream_is_relayed_byte_exact_with_worker_header(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1, chunks=20)
    gw = await gateway([w])
    body = chat(stream=True, stream_options={"include_usage": True})
    async with client.post(gw.url + "/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        assert resp.headers[WORKER_HEADER] == "w0"
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        data = await resp.read()
    assert data == b"".join(stream_chunks(w.name, 20, usage=True))


async def test_non_stream_body_unchanged_and_request_forwarded_unchanged(fake_workers, gateway,
                                                                          client) -> None:
    [w] = await fake_workers(1)
    gw = await gateway([w], stream_migration=False)  # armed requests are streamed internally
    raw = b'{"model":"fake-model","messages":[{"role":"user","content":"x"}],  "max_tokens": 3}'
    async with client.post(gw.url + "/v1/chat/completions", data=raw,
                           headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 200
        assert resp.headers[WORKER_HEADER] == "w0"
        got = await resp.json()
    assert got["choices"] == completion_body(w.name, 5)["choices"]
    assert w.stats.bodies == [raw]


async def test_bad_bodies_get_400_json_and_are_not_forwarded(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1)
    gw = await gateway([w])
    for path, raw in [("/v1/chat/completions", b"not json"), ("/v1/chat/completions", b"[1]"),
                      ("/v1/chat/completions", b'{"messages": []}'), ("/v1/completions", b'{"x": 1}'),
                      ("/v1/completions", b'{"prompt": {"a": 1}}'), ("/v1/chat/completions", b"")]:
        async with client.post(gw.url + path, data=raw) as resp:
            assert resp.status == 400, raw
            err = (await resp.json())["error"]
            assert err["type"] == "invalid_request_error" and err["message"]
    assert w.stats.requests == 0


async def test_completions_endpoint_and_models_and_workers(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1)
    gw = await gateway([w])
    async with client.post(gw.url + "/v1/completions", json={"prompt": "abc", "model": "fake-model"}) as resp:
        assert resp.status == 200
    async with client.get(gw.url + "/v1/models") as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == ["fake-model"]
    async with client.get(gw.url + "/workers") as resp:
        [info] = await resp.json()
    assert {k: info[k] for k in ("id", "url", "healthy", "circuit_state", "in_flight", "weight")} == {
        "id": "w0", "url": w.url, "healthy": True, "circuit_state": "closed", "in_flight": 0, "weight": 1.0}
    for key in ("running", "waiting", "kv_cache_usage"):
        assert key in info


async def test_client_disconnect_releases_load_and_cancels_upstream(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1, chunks=1000, chunk_delay_s=0.01)
    gw = await gateway([w])
    resp = await client.post(gw.url + "/v1/chat/completions", json=chat(stream=True))
    await resp.content.readany()
    assert gw.state.registry.get("w0").in_flight == 1
    resp.close()  # the client goes away mid-stream
    for _ in range(100):
        if w.stats.cancelled == 1 and gw.state.registry.get("w0").in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert gw.state.registry.get("w0").in_flight == 0
    assert w.stats.cancelled == 1 and w.stats.finished == 0


async def test_disconnect_while_waiting_for_non_stream_cancels_upstream(fake_workers, gateway,
                                                                         client) -> None:
    [w] = await fake_workers(1, slow_first_byte_s=30)
    gw = await gateway([w])
    task = asyncio.create_task(client.post(gw.url + "/v1/chat/completions", json=chat()))
    for _ in range(100):
        if w.stats.active == 1:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    for _ in range(100):
        if w.stats.cancelled == 1 and gw.state.registry.get("w0").in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert w.stats.cancelled == 1
    assert gw.state.registry.get("w0").in_flight == 0


async def test_large_stream_to_a_slow_client_is_complete(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1, chunks=600, pad=8000)  # ~4.8 MB: the relay pauses reading upstream
    gw = await gateway([w])
    received = bytearray()
    async with client.post(gw.url + "/v1/chat/completions", json=chat(stream=True)) as resp:
        async for chunk in resp.content.iter_chunked(64 * 1024):
            received += chunk
            if len(received) < 2_000_000:
                await asyncio.sleep(0.002)  # a slow reader for the first part
    assert bytes(received) == b"".join(stream_chunks(w.name, 600, usage=False, pad=8000))
    assert gw.state.registry.get("w0").in_flight == 0
