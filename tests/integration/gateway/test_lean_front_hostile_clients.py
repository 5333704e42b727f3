"""Raw sockets against the gateway's front: HTTP/1.0, framing, limits, malformed input, upgrades, slow
and vanishing clients. Every error is JSON with the right status, never a stack trace or a hang."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator

import orjson
import pytest

from dpserve.http_names import CHAT_PATH as CHAT
from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import RunningGateway, chat
from tests.integration.gateway.hardening import read_response, request


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


class _Conn:
    def __init__(self, gw: RunningGateway) -> None:
        self.port = int(gw.url.rsplit(":", 1)[1])

    async def __aenter__(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self.reader, self.writer

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()


def _error(body: bytes) -> dict[str, object]:
    err = orjson.loads(body)["error"]
    assert set(err) >= {"message", "type", "code"}
    return err  # type: ignore[no-any-return]


@pytest.fixture
async def gw(fake_workers, gateway) -> AsyncIterator[RunningGateway]:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1, chunks=3)
    yield await gateway([w])


async def test_http10_whole_and_streamed_answers_end_with_the_close(gw: RunningGateway) -> None:
    for stream in (False, True):
        async with _Conn(gw) as (reader, writer):
            writer.write(request("POST", CHAT, orjson.dumps(chat("x", stream=stream)), version="1.0"))
            status, headers, body = await read_response(reader)
            assert status == 200 and headers[WORKER_HEADER] == "w0"
            assert headers["connection"] == "close" and "transfer-encoding" not in headers
            assert body.endswith(b"data: [DONE]\n\n") if stream else orjson.loads(body)["choices"]
            assert await _closed(reader)


async def test_http10_keep_alive_is_honoured_and_said(gw: RunningGateway) -> None:
    async with _Conn(gw) as (reader, writer):
        for i in range(2):
            writer.write(request("POST", CHAT, orjson.dumps(chat(f"k{i}")), "Connection: keep-alive\r\n",
                                  version="1.0"))
            status, headers, _ = await read_response(reader)
            assert status == 200 and headers["connection"].lower() == "keep-alive"


async def test_keep_alive_connection_serves_many_requests(gw: RunningGateway) -> None:
    async with _Conn(gw) as (reader, writer):
        for i in range(20):
            writer.write(request("POST", CHAT + "?trace=1", orjson.dumps(chat(f"m{i}", stream=i % 2 == 1))))
            status, headers, _ = await read_response(reader)
            assert status == 200 and headers[WORKER_HEADER] == "w0"


async def test_chunked_request_body_and_expect_continue(gw: RunningGateway) -> None:
    body = orjson.dumps(chat("chunked"))
    async with _Conn(gw) as (reader, writer):
        chunks = b"%x\r\n%s\r\n" % (10, body[:10]) + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - 10, body[10:])
        head = f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
        writer.write(head.encode() + chunks)
        assert (await read_response(reader))[0] == 200
        writer.write(f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        assert (await read_response(reader))[0] == 200


async def test_body_over_the_limit_is_413_json(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    gw = await gateway([w], max_request_bytes=1024)
    async with _Conn(gw) as (reader, writer):
        writer.write(request("POST", CHAT, orjson.dumps(chat("x" * 2000))))
        status, _, body = await read_response(reader)
        assert status == 413 and _error(body)["type"] == "invalid_request_error"
        assert await _closed(reader)
    async with _Conn(gw) as (reader, writer):  # announced too large: refused before the body is sent
        writer.write(f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n"
                     f"Content-Length: 5000\r\n\r\n".encode())
        status, _, body = await read_response(reader)
        assert status == 413 and _error(body)
    assert w.stats.requests == 0


@pytest.mark.parametrize("head, status", [
    (f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nX-Big: {'a' * 10000}\r\nContent-Length: 2\r\n\r\n{{}}", 431),
    (f"POST {CHAT}?{'q' * 10000} HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{{}}", 414),
    (f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\n" + "".join(f"X-H{i}: v\r\n" for i in range(2000)) + "\r\n",
     431),
    (f"GET /health HTTP/1.1\r\nHost: gw\r\nX-Big: {'a' * 10000}\r\n\r\n", 431),
])
async def test_oversized_request_heads_get_json_errors(gw: RunningGateway, head: str, status: int) -> None:
    async with _Conn(gw) as (reader, writer):
        writer.write(head.encode())
        got, headers, body = await read_response(reader)
        assert got == status and headers["content-type"] == "application/json" and _error(body)
        assert await _closed(reader)


async def test_a_header_that_never_ends_is_cut_off(gw: RunningGateway) -> None:
    async with _Conn(gw) as (reader, writer):
        writer.write(f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nX-Big: ".encode())
        for _ in range(40):  # the front must not buffer this without bound
            writer.write(b"a" * 4096)
            await asyncio.sleep(0)
        status, _, body = await read_response(reader)
        assert status == 431 and _error(body)


async def test_a_head_split_across_reads_before_a_large_body_is_not_mistaken_for_a_huge_head(
        gw: RunningGateway) -> None:
    body = orjson.dumps(chat("b" * 300_000))
    head = request("POST", CHAT, body, "Authorization: Bearer " + "t" * 3000 + "\r\n")[:-len(body)]
    async with _Conn(gw) as (reader, writer):
        writer.write(head[:1000])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(head[1000:2000])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(head[2000:] + body)
        status, _, answer = await read_response(reader)
        assert status == 200, answer


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"POST /v1/chat/completions HTTP/9.9\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nBad Header\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
])
async def test_malformed_http_is_400_json_then_close(gw: RunningGateway, data: bytes) -> None:
    async with _Conn(gw) as (reader, writer):
        writer.write(data)
        status, headers, body = await read_response(reader)
        assert status == 400 and headers["connection"] == "close" and _error(body)
        assert await _closed(reader)


async def test_pipelined_good_request_then_garbage_answers_the_good_one_first(gw: RunningGateway) -> None:
    async with _Conn(gw) as (reader, writer):
        writer.write(request("POST", CHAT, orjson.dumps(chat("ok"))) + b"GARBAGE\r\n\r\n")
        first, second = await read_response(reader), await read_response(reader)
        assert first[0] == 200 and first[1][WORKER_HEADER] == "w0"
        assert second[0] == 400 and _error(second[2])
        assert await _closed(reader)


@pytest.mark.parametrize("body, status", [
    (b"{not json", 400), (b"[1, 2]", 400), (b"", 400), (b'{"messages": []}', 400),
    (b"\xff\xfe", 400), (orjson.dumps(chat("x", model="no-such-model")), 404),
])
async def test_bad_bodies_get_json_errors_and_the_connection_stays_usable(
        gw: RunningGateway, body: bytes, status: int) -> None:
    async with _Conn(gw) as (reader, writer):
        writer.write(request("POST", CHAT, body))
        got, headers, answer = await read_response(reader)
        assert got == status and headers["content-type"] == "application/json" and _error(answer)
        writer.write(request("POST", CHAT, orjson.dumps(chat("after"))))
        assert (await read_response(reader))[0] == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS", "PATCH"])
async def test_other_methods_on_a_proxied_path_are_405_json(gw: RunningGateway, method: str) -> None:
    async with _Conn(gw) as (reader, writer):
        writer.write(request(method, CHAT))
        status, headers, body = await read_response(reader)
        assert status == 405 and "POST" in headers["allow"] and _error(body)


async def test_head_on_a_proxied_path_is_405_without_a_body(gw: RunningGateway) -> None:
    async with _Conn(gw) as (reader, writer):
        writer.write(request("HEAD", CHAT) + request("GET", "/health"))
        status, _, _ = await read_response(reader, head_only=True)
        assert status == 405
        assert (await read_response(reader))[2] == b'{"status":"ok"}'


async def test_h2c_upgrade_offer_is_ignored_and_the_body_kept(gw: RunningGateway) -> None:
    body = orjson.dumps(chat("upgrade"))
    async with _Conn(gw) as (reader, writer):
        offer = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
        writer.write(request("POST", CHAT, body, offer) + request("POST", CHAT, body))
        for _ in range(2):
            status, headers, answer = await read_response(reader)
            assert status == 200 and headers[WORKER_HEADER] == "w0", answer


async def test_slow_partial_headers_then_close_leaves_nothing_behind(gw: RunningGateway) -> None:
    async with _Conn(gw) as (_reader, writer):
        writer.write(f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Le".encode())
        await asyncio.sleep(0.1)
        writer.write(b"ngth: 100\r\n\r\n{\"mod")
        await asyncio.sleep(0.1)
    server = gw.server
    for _ in range(100):
        if not server.connections:
            break
        await asyncio.sleep(0.02)
    assert not server.connections
    worker = gw.state.registry.get("w0")
    assert worker is not None and worker.in_flight == 0


async def test_client_leaving_mid_stream_releases_load_and_cancels_upstream(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1, chunks=200, chunk_delay_s=0.02)
    gw = await gateway([w])
    async with _Conn(gw) as (reader, writer):
        writer.write(request("POST", CHAT, orjson.dumps(chat("s", stream=True))))
        status, headers, _ = await read_response(reader, head_only=True)
        assert status == 200 and headers[WORKER_HEADER] == "w0"
        await reader.readuntil(b"data:")
    await _load_released_and_upstream_cancelled(gw, w)


_BODY = orjson.dumps(chat("z"))


@pytest.mark.parametrize("coding, data", [
    ("gzip", gzip.compress(_BODY)), ("GZIP", gzip.compress(_BODY)), ("deflate", zlib.compress(_BODY)),
    ("deflate", zlib.compress(_BODY, wbits=-zlib.MAX_WBITS)), ("identity", _BODY),
], ids=["gzip", "GZIP", "deflate", "raw-deflate", "identity"])
async def test_compressed_request_bodies_are_inflated(gw: RunningGateway, coding: str, data: bytes) -> None:
    for other_route_first in (False, True):
        async with _Conn(gw) as (reader, writer):
            if other_route_first:
                writer.write(request("GET", "/health"))
                await read_response(reader)
            writer.write(request("POST", CHAT, data, f"Content-Encoding: {coding}\r\n"))
            status, headers, body = await read_response(reader)
            assert status == 200 and headers[WORKER_HEADER] == "w0", body


@pytest.mark.parametrize("coding, data, status", [
    ("br", _BODY, 415), ("gzip, identity", gzip.compress(_BODY), 415), ("gzip", _BODY, 400),
    ("gzip", gzip.compress(_BODY)[:-12], 400), ("deflate", zlib.compress(b" " * 5000), 413),
    ("gzip", gzip.compress(b" " * 5000), 413),
], ids=["br", "two-codings", "not-gzip", "truncated", "deflate-bomb", "gzip-bomb"])
async def test_bad_or_inflating_compressed_bodies_get_json_errors(
        fake_workers, gateway, coding: str, data: bytes, status: int) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    gw = await gateway([w], max_request_bytes=4000)
    async with _Conn(gw) as (reader, writer):
        writer.write(request("POST", CHAT, data, f"Content-Encoding: {coding}\r\n"))
        got, headers, body = await read_response(reader)
        assert got == status and headers["content-type"] == "application/json" and _error(body)
    assert w.stats.requests == 0


async def test_other_routes_without_a_host_header_get_json_400(gw: RunningGateway) -> None:
    async with _Conn(gw) as (reader, writer):
        writer.write(b"GET /health HTTP/1.1\r\n\r\n")
        status, _, body = await read_response(reader)
        assert status == 400 and "Host" in str(_error(body)["message"])
    async with _Conn(gw) as (reader, writer):  # HTTP/1.0 needs none
        writer.write(b"GET /health HTTP/1.0\r\n\r\n")
        assert (await read_response(reader))[0] == 200


async def test_a_client_that_stops_reading_a_stream_holds_back_the_replica_then_leaves(
        fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1, chunks=5000, pad=4000)  # ~20 MB of SSE, far more than socket buffers
    gw = await gateway([w])
    async with _Conn(gw) as (reader, writer):
        writer.write(request("POST", CHAT, orjson.dumps(chat("s", stream=True))))
        assert (await read_response(reader, head_only=True))[0] == 200
        await asyncio.sleep(0.5)  # read nothing more: the gateway must stop reading the replica too
        assert w.stats.finished == 0
    await _load_released_and_upstream_cancelled(gw, w)


async def _load_released_and_upstream_cancelled(gw, w) -> None:  # type: ignore[no-untyped-def]
    """Wait (3 s at most) until w0's in-flight count is back to 0 and the replica saw its one
    request cancelled, never finished."""
    worker = gw.state.registry.get("w0")
    assert worker is not None
    for _ in range(300):
        if worker.in_flight == 0 and w.stats.cancelled == 1:
            break
        await asyncio.sleep(0.01)
    assert worker.in_flight == 0 and w.stats.cancelled == 1 and w.stats.finished == 0
