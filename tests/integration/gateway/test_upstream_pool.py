"""UpstreamPool (the proxy's HTTP/1.1 client): keep-alive reuse, stale connections, streaming,
abort on cancel, refused connections."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from dpserve.gateway.upstream import ConnectFailed, UpstreamPool, UpstreamTimeout
from tests.conftest import free_port
from tests.integration.gateway.conftest import chat
from tests.integration.gateway.fake_worker import stream_chunks

H = {"Content-Type": "application/json"}


async def test_sequential_requests_reuse_one_connection(fake_workers) -> None:
    [w] = await fake_workers(1)
    pool = UpstreamPool(1.0)
    for _ in range(10):
        resp = await pool.post(w.url, "/v1/chat/completions", orjson.dumps(chat()), H)
        assert resp.status == 200 and resp.headers["content-type"].startswith("application/json")
        assert orjson.loads(await resp.read())["usage"]["prompt_tokens"] == 7
        resp.release()
    assert w.stats.requests == 10 and len(w.stats.peers) == 1
    pool.close()


async def test_gateway_keeps_upstream_connections_alive(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1)
    gw = await gateway([w])
    for _ in range(10):
        async with client.post(gw.url + "/v1/chat/completions", json=chat()) as resp:
            assert resp.status == 200
    assert len(w.stats.peers) == 1


async def test_chunked_stream_arrives_intact(fake_workers) -> None:
    [w] = await fake_workers(1, chunks=50)
    pool = UpstreamPool(1.0)
    resp = await pool.post(w.url, "/v1/chat/completions", orjson.dumps(chat(stream=True)), H)
    parts = []
    while chunk := await resp.next_chunk():
        parts.append(chunk)
    assert b"".join(parts) == b"".join(stream_chunks(w.name, 50, usage=False))
    resp.release()
    pool.close()


async def test_stale_keepalive_connection_is_replaced(fake_workers) -> None:
    [w] = await fake_workers(1)
    pool = UpstreamPool(1.0)
    resp = await pool.post(w.url, "/v1/chat/completions", orjson.dumps(chat()), H)
    await resp.read()
    resp.release()
    await w.kill()  # drops the idle connection the pool holds
    await w.revive()
    resp = await pool.post(w.url, "/v1/chat/completions", orjson.dumps(chat()), H)
    assert resp.status == 200
    await resp.read()
    resp.release()
    assert len(w.stats.peers) == 2
    pool.close()


async def test_cancel_closes_the_connection_and_refused_raises(fake_workers) -> None:
    [w] = await fake_workers(1, slow_first_byte_s=10)
    pool = UpstreamPool(1.0)
    task = asyncio.create_task(pool.post(w.url, "/v1/chat/completions", orjson.dumps(chat()), H))
    while w.stats.active == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    for _ in range(100):
        if w.stats.cancelled:
            break
        await asyncio.sleep(0.01)
    assert w.stats.cancelled == 1
    with pytest.raises(ConnectFailed):
        await pool.post(f"http://127.0.0.1:{free_port()}", "/v1/completions", b"{}", H)
    pool.close()


async def test_timeout_raises_closes_the_connection_and_is_not_retried(fake_workers) -> None:
    [w] = await fake_workers(1, slow_first_byte_s=10)
    pool = UpstreamPool(1.0)
    with pytest.raises(UpstreamTimeout):
        await pool.post(w.url, "/v1/chat/completions", orjson.dumps(chat()), H, timeout_s=0.05)
    for _ in range(100):
        if w.stats.cancelled:
            break
        await asyncio.sleep(0.01)
    assert w.stats.cancelled == 1 and w.stats.requests == 1  # aborted, and not re-sent elsewhere
    pool.close()


async def test_read_timeout_covers_the_body(fake_workers) -> None:
    [w] = await fake_workers(1, chunks=3, chunk_delay_s=10)
    pool = UpstreamPool(1.0)
    resp = await pool.post(w.url, "/v1/chat/completions", orjson.dumps(chat(stream=True)), H, timeout_s=5)
    with pytest.raises(UpstreamTimeout):
        await resp.read(timeout_s=0.05)
    resp.close()
    pool.close()


async def test_prewarm_opens_idle_connections_that_requests_then_use(fake_workers) -> None:
    [w] = await fake_workers(1)
    pool = UpstreamPool(1.0)
    assert await pool.prewarm(w.url, 4) == 4
    assert await pool.prewarm(w.url, 4) == 0  # already 4 idle: nothing more to open
    responses = await asyncio.gather(*(pool.post(w.url, "/v1/chat/completions", orjson.dumps(chat()), H)
                                       for _ in range(4)))
    for resp in responses:
        await resp.read()
        resp.release()
    assert w.stats.requests == 4 and len(w.stats.peers) == 4
    assert await pool.prewarm(w.url, 4) == 0  # the 4 came back to the pool, none was opened on demand
    pool.close()


async def test_prewarm_of_a_dead_replica_opens_nothing() -> None:
    pool = UpstreamPool(0.5)
    assert await pool.prewarm(f"http://127.0.0.1:{free_port()}", 4) == 0
    pool.close()


async def test_gateway_prewarms_connections_to_replicas_that_are_up(fake_workers, gateway, client) -> None:
    [w] = await fake_workers(1)
    gw = await gateway([w])
    assert await gw.state.upstream.prewarm(w.url, 4) == 0  # the gateway opened them at start
