"""Real clients through the gateway's front: curl (HTTP/1.0, h2c upgrade offer, Expect, streaming),
many concurrent connections, and `dpserve router` shutting down with connections open."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal

import aiohttp
import orjson
import pytest

from dpserve.http_names import CHAT_PATH as CHAT
from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import chat, start_router_process

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


async def _curl(*args: str) -> tuple[str, bytes]:
    proc = await asyncio.create_subprocess_exec("curl", "-sS", "-i", "--max-time", "10", *args,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    head, _, body = out.replace(b"HTTP/1.1 100 Continue\r\n\r\n", b"").partition(b"\r\n\r\n")
    return head.decode("latin-1").lower(), body


@needs_curl
@pytest.mark.parametrize("flags", [[], ["--http1.0"], ["--http2"], ["-H", "Expect: 100-continue"],
                                   ["-H", "Transfer-Encoding: chunked"]])
async def test_curl_whole_and_streamed(fake_workers, gateway, flags: list[str]) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1, chunks=3)
    gw = await gateway([w])
    for stream in (False, True):
        head, body = await _curl(*flags, "-N", "-H", "Content-Type: application/json",
                                 "--data-binary", orjson.dumps(chat("c" * 2000, stream=stream)).decode(),
                                 gw.url + CHAT)
        assert head.startswith("http/1.1 200") and "x-dpserve-worker: w0" in head, head
        assert body.endswith(b"data: [DONE]\n\n") if stream else orjson.loads(body)["choices"]
    assert w.stats.requests == 2


@needs_curl
async def test_curl_reuses_one_connection_across_routes(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    gw = await gateway([w])
    data = orjson.dumps(chat("r")).decode()
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-v", "-o", "/dev/null", "--max-time", "10", "-H", "Content-Type: application/json",
        "--data-binary", data, gw.url + CHAT, "--next", gw.url + "/health", "--next",
        "-H", "Content-Type: application/json", "--data-binary", data, gw.url + CHAT,
        stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0 and err.count(b"Re-using existing connection") == 2, err
    assert w.stats.requests == 2


async def test_many_concurrent_connections(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    workers = await fake_workers(2, chunks=2)
    gw = await gateway(workers)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int) -> tuple[int, str]:
            async with session.post(gw.url + CHAT, json=chat(f"n{i}", stream=i % 3 == 0)) as resp:
                await resp.read()
                return resp.status, resp.headers[WORKER_HEADER]
        results = await asyncio.gather(*(one(i) for i in range(300)))
    assert {s for s, _ in results} == {200} and {w for _, w in results} <= {"w0", "w1"}
    assert sum(w.stats.requests for w in workers) == 300
    for _ in range(100):
        if not gw.server.connections:
            break
        await asyncio.sleep(0.02)
    assert not gw.server.connections


async def test_sigterm_closes_idle_connections_refuses_new_ones_and_finishes_streams(fake_workers) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1, chunks=40, chunk_delay_s=0.02)
    proc, url = await start_router_process(w.url)
    port = int(url.rsplit(":", 1)[1])
    try:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = orjson.dumps(chat("s", stream=True))
        head = f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await reader.readuntil(b"data:")
        os.kill(proc.pid, signal.SIGTERM)
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # the idle connection is closed
        await asyncio.sleep(0.2)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        rest = await asyncio.wait_for(reader.read(), 10)
        assert rest.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n") and w.stats.finished == 1
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        idle_writer.close()
        writer.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_pooled_keep_alive_client_mixing_routes(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    workers = await fake_workers(2, chunks=2)
    gw = await gateway(workers)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session:
        async def one(i: int) -> int:
            if i % 10 == 9:  # now and then another route, on the same pooled connections
                async with session.get(gw.url + "/v1/models") as resp:
                    await resp.read()
                    return resp.status
            async with session.post(gw.url + CHAT, json=chat(f"p{i}", stream=i % 2 == 0)) as resp:
                body = await resp.read()
                assert resp.headers[WORKER_HEADER] in ("w0", "w1")
                assert body.endswith(b"data: [DONE]\n\n") if i % 2 == 0 else orjson.loads(body)["choices"]
                return resp.status
        statuses = await asyncio.gather(*(one(i) for i in range(200)))
    assert set(statuses) == {200} and sum(w.stats.requests for w in workers) == 180
