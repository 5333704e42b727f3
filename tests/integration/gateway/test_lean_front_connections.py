"""Real sockets through the gateway's front: one keep-alive connection mixing proxied and other
routes, pipelined requests, and a half-sent request."""

from __future__ import annotations

import asyncio
import socket

import orjson

from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import chat, eventually
from tests.integration.gateway.hardening import read_response, request


async def test_one_connection_mixes_proxied_and_other_routes(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1, chunks=2)
    gw = await gateway([w])
    reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))
    try:
        steps = [
            (request("POST", "/v1/chat/completions", orjson.dumps(chat("a"))), 200),
            (request("POST", "/v1/chat/completions", orjson.dumps(chat("b", stream=True))), 200),
            (request("GET", "/v1/models"), 200),
            (request("POST", "/workers", b"{not json"), 400),
            (request("POST", "/v1/chat/completions", orjson.dumps(chat("c"))), 200),
            (request("GET", "/v1/chat/completions"), 405),
        ]
        for data, status in steps:
            writer.write(data)
            got, headers, body = await read_response(reader)
            assert got == status, body
            if status >= 400:
                assert "error" in orjson.loads(body)
            elif b"completions" in data.split(b"\r\n", 1)[0]:
                assert headers[WORKER_HEADER] == "w0"
    finally:
        writer.close()
    assert w.stats.requests == 3


async def test_pipelined_requests_come_back_in_order(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    gw = await gateway([w])
    reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))
    try:
        writer.write(b"".join(request("POST", "/v1/completions",
                                       orjson.dumps({"model": "fake-model", "prompt": f"p{i}"}))
                              for i in range(3)) + request("GET", "/health"))
        answers = [await read_response(reader) for _ in range(4)]
    finally:
        writer.close()
    assert [s for s, _, _ in answers] == [200, 200, 200, 200]
    assert orjson.loads(answers[3][2]) == {"status": "ok"}
    assert [orjson.loads(b)["prompt"] for b in w.stats.bodies] == ["p0", "p1", "p2"]


async def test_a_client_that_leaves_mid_request_releases_its_load(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1, slow_first_byte_s=5.0)
    gw = await gateway([w])
    _reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))
    writer.write(request("POST", "/v1/chat/completions", orjson.dumps(chat("x"))))
    worker = gw.state.registry.get("w0")
    assert worker is not None
    await eventually(lambda: worker.in_flight == 1)
    writer.close()
    for _ in range(200):
        if worker.in_flight == 0 and w.stats.cancelled == 1:
            break
        await asyncio.sleep(0.01)
    assert worker.in_flight == 0 and w.stats.cancelled == 1


async def test_client_connections_have_tcp_nodelay(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    gw = await gateway([w])
    reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))
    try:
        writer.write(request("POST", "/v1/chat/completions", orjson.dumps(chat("x"))))
        assert (await read_response(reader))[0] == 200
        [conn] = gw.server.connections
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        writer.close()
