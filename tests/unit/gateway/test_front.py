"""The gateway's HTTP/1.1 front (front.py) over a fake transport: framing, pipelining, errors, routes."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from dpserve.gateway.exchange import ResponseSink
from dpserve.gateway.routes import Request
from tests.unit.gateway.front_fakes import Handler, connect, make_server
from tests.unit.gateway.front_fakes import open_front as _connect
from tests.unit.gateway.front_fakes import post as _post
from tests.unit.gateway.front_fakes import responses as _responses
from tests.unit.gateway.front_fakes import settle as _settle


async def test_pipelined_requests_are_answered_in_order_one_at_a_time() -> None:
    handler = Handler()
    proto, transport, _ = await _connect(handler)
    proto.data_received(_post(b"wait") + _post(b"second", b"/v1/completions?x=1"))
    await _settle()
    assert [c[2] for c in handler.calls] == [b"wait"] and transport.out == b""
    handler.release.set()
    await _settle()
    answers = _responses(transport.out)
    assert [(s, b) for s, _, b in answers] == [(b"HTTP/1.1 200 OK", b"ok:wait"),
                                               (b"HTTP/1.1 200 OK", b"ok:second")]
    assert handler.calls[1][0] == "/v1/completions" and handler.calls[1][1]["Host"] == "gw"
    _status, headers, _ = answers[0]
    assert headers[b"x-dpserve-worker"] == b"w0" and b"date" in headers and b"connection" not in headers
    assert not transport.closing


async def test_headers_are_case_insensitive_for_the_handler() -> None:
    seen: list[str | None] = []

    async def handler(gw: Any, request: Request, sink: ResponseSink) -> None:
        seen.append(request.headers.get("Authorization"))
        await sink.whole(200, {}, b"")
    proto, _, _ = await _connect(handler)
    proto.data_received(_post(b"{}", extra=b"authorization: Bearer k\r\n"))
    await _settle()
    assert seen == ["Bearer k"]


async def test_chunked_request_body_is_decoded() -> None:
    handler = Handler()
    proto, transport, _ = await _connect(handler)
    proto.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n"
                        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    await _settle()
    assert handler.calls[0][2] == b"abcde" and _responses(transport.out)[0][2] == b"ok:abcde"


async def test_stream_is_chunked_and_empty_writes_send_nothing() -> None:
    proto, transport, _ = await _connect(Handler())
    proto.data_received(_post(b"stream"))
    await _settle()
    head, _, body = bytes(transport.out).partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"x-dpserve-worker: w1" in head
    assert body == b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"
    assert not transport.closing


async def test_http10_gets_connection_close_and_an_unframed_stream() -> None:
    proto, transport, _ = await _connect(Handler())
    proto.data_received(_post(b"stream", version=b"1.0"))
    await _settle()
    head, _, body = bytes(transport.out).partition(b"\r\n\r\n")
    assert b"Connection: close" in head and b"chunked" not in head
    assert body == b"data: 1\n\ndata: 2\n\n" and transport.closing


async def test_connection_close_header_closes_after_the_answer() -> None:
    proto, transport, _ = await _connect(Handler())
    proto.data_received(_post(b"x", extra=b"Connection: close\r\n"))
    await _settle()
    assert _responses(transport.out)[0][1][b"connection"] == b"close" and transport.closing


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    handler = Handler()
    proto, transport, _ = await _connect(handler)
    proto.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n"
                        b"Content-Length: 2\r\n\r\n")
    assert transport.out == b"HTTP/1.1 100 Continue\r\n\r\n"
    proto.data_received(b"hi")
    await _settle()
    assert transport.out.endswith(b"ok:hi")


async def test_gateway_errors_are_json_with_their_headers_and_bugs_are_500() -> None:
    proto, transport, _ = await _connect(Handler())
    proto.data_received(_post(b"fail") + _post(b"boom") + _post(b"after"))
    await _settle()
    (s1, h1, b1), (s2, _, b2), (_s3, _, b3) = _responses(transport.out)
    assert s1 == b"HTTP/1.1 429 Too Many Requests" and h1[b"retry-after"] == b"2"
    assert h1[b"content-type"] == b"application/json"
    assert orjson.loads(b1)["error"] == {"message": "slow down", "type": "rate_limit_error",
                                         "code": "rate_limited"}
    assert s2.startswith(b"HTTP/1.1 500") and orjson.loads(b2)["error"]["type"] == "internal_error"
    assert b3 == b"ok:after"  # the connection stays usable


@pytest.mark.parametrize("data, status", [
    (b"GARBAGE\r\n\r\n", b"400"),
    (_post(b"x" * 2000), b"413"),
])
async def test_bad_requests_get_a_json_error_and_the_connection_closes(data: bytes, status: bytes) -> None:
    handler = Handler()
    proto, transport, _ = await _connect(handler, max_request_bytes=1024)
    proto.data_received(data)
    await _settle()
    [(line, headers, body)] = _responses(transport.out)
    assert line.split()[1] == status and headers[b"connection"] == b"close"
    assert "error" in orjson.loads(body) and transport.closing and handler.calls == []


async def test_client_leaving_cancels_the_request_in_progress() -> None:
    handler = Handler()
    proto, transport, _ = await _connect(handler)
    proto.data_received(_post(b"wait"))
    await _settle()
    transport.close()
    await _settle()
    assert handler.cancelled == 1 and proto.task is not None and proto.task.done()


async def test_shutdown_closes_idle_connections_and_lets_busy_ones_finish() -> None:
    handler = Handler()
    _idle, idle_transport, server = await _connect(handler)
    busy, busy_transport = connect(server)
    busy.data_received(_post(b"wait"))
    await _settle()
    stopping = asyncio.create_task(server.stop(1.0))
    await _settle()
    assert idle_transport.closing and not busy_transport.closing
    handler.release.set()
    await stopping
    assert _responses(busy_transport.out)[0][2] == b"ok:wait" and busy_transport.closing


async def test_a_stop_cancelled_while_draining_still_aborts_and_stops_the_gateway() -> None:
    """A second Ctrl-C cancels the drain: the busy connection is cut and the gateway still stops."""
    handler = Handler()
    busy, busy_transport, server = await _connect(handler)
    busy.data_received(_post(b"wait"))
    await _settle()
    stopping = asyncio.create_task(server.stop(60.0))
    await _settle()
    assert not busy_transport.closing and not server.gateway.stopped  # draining
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert busy_transport.closing and server.gateway.stopped


async def test_another_route_on_the_same_connection_is_served_by_the_same_front() -> None:
    handler = Handler()
    proto, transport, server = await _connect(handler)
    proto.data_received(_post(b"first") + b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n" + _post(b"third"))
    await _settle()
    assert [b for _, _, b in _responses(transport.out)] == [b"ok:first", b'{"status":"ok"}', b"ok:third"]
    assert transport.protocol is proto and proto in server.connections and not transport.closing


async def test_connections_idle_past_the_keepalive_timeout_are_closed() -> None:
    handler = Handler()
    server = make_server(handler, keepalive_timeout_s=0.05)
    (_idle, idle_transport), (busy, busy_transport) = connect(server), connect(server)
    busy.data_received(_post(b"wait"))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if idle_transport.closing:
            break
    assert idle_transport.closing and not busy_transport.closing
    handler.release.set()
    await server.stop(1.0)


async def test_a_refused_request_is_answered_after_the_one_in_progress() -> None:
    handler = Handler()
    proto, transport, _ = await _connect(handler)
    proto.data_received(_post(b"wait"))
    await _settle()
    proto.data_received(b"NOT HTTP\r\n\r\n")
    await _settle()
    assert transport.out == b"" and not transport.reading and handler.cancelled == 0
    handler.release.set()
    await _settle()
    (s1, h1, b1), (s2, h2, _) = _responses(transport.out)
    assert (s1, b1) == (b"HTTP/1.1 200 OK", b"ok:wait") and b"connection" not in h1
    assert s2.startswith(b"HTTP/1.1 400") and h2[b"connection"] == b"close" and transport.closing


async def test_http10_keep_alive_request_is_told_keep_alive() -> None:
    proto, transport, _ = await _connect(Handler())
    proto.data_received(_post(b"a", extra=b"Connection: keep-alive\r\n", version=b"1.0"))
    await _settle()
    assert _responses(transport.out)[0][1][b"connection"] == b"keep-alive" and not transport.closing


async def test_expect_continue_with_a_body_over_the_limit_is_413_at_once() -> None:
    handler = Handler()
    proto, transport, _ = await _connect(handler, max_request_bytes=1024)
    proto.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n"
                        b"Content-Length: 1025\r\n\r\n")
    await _settle()
    [(status, _, body)] = _responses(transport.out)
    assert status.startswith(b"HTTP/1.1 413") and orjson.loads(body)["error"]["code"] == 413
    assert handler.calls == []


async def test_an_upgrade_offer_is_answered_in_http11_with_its_body() -> None:
    handler = Handler()
    proto, transport, _ = await _connect(handler)
    offer = b"Connection: Upgrade, HTTP2-Settings, keep-alive\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n"
    proto.data_received(_post(b"first", extra=offer) + _post(b"second"))
    await _settle()
    assert [c[2] for c in handler.calls] == [b"first", b"second"]
    headers = handler.calls[0][1]
    assert "Upgrade" not in headers and headers["Connection"] == "keep-alive"
    assert [b for _, _, b in _responses(transport.out)] == [b"ok:first", b"ok:second"]


async def test_connect_is_refused() -> None:
    proto, transport, _ = await _connect(Handler())
    proto.data_received(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    await _settle()
    [(status, _, _)] = _responses(transport.out)
    assert status.startswith(b"HTTP/1.1 400") and transport.closing


async def test_a_client_pipelining_without_end_is_no_longer_read() -> None:
    handler = Handler()
    proto, transport, _ = await _connect(handler)
    proto.data_received(_post(b"wait") + b"".join(_post(b"%d" % i) for i in range(20)))
    await _settle()
    assert not transport.reading
    handler.release.set()
    await _settle()
    assert transport.reading and len(_responses(transport.out)) == 21


async def test_whole_answers_wait_for_a_client_that_does_not_read() -> None:
    handler = Handler()
    proto, _, _ = await _connect(handler)
    proto.pause_writing()
    proto.data_received(_post(b"one") + _post(b"two"))
    await _settle()
    assert [c[2] for c in handler.calls] == [b"one"]
    proto.resume_writing()
    await _settle()
    assert [c[2] for c in handler.calls] == [b"one", b"two"]


async def test_upgrade_offers_in_one_read_are_bounded() -> None:
    handler = Handler()
    proto, transport, _ = await _connect(handler)
    offer = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
    proto.data_received(b"".join(_post(b"%d" % i, extra=offer) for i in range(12)))
    await _settle()
    answers = _responses(transport.out)
    assert [b for _, _, b in answers[:8]] == [b"ok:%d" % i for i in range(8)]
    assert answers[8][0].startswith(b"HTTP/1.1 400") and len(answers) == 9 and transport.closing


async def test_mutated_requests_never_escape_as_exceptions() -> None:
    """Seeded fuzz: bytes flipped, cut or repeated in a valid pipelined pair; every answer is framed
    and every error is one of the JSON statuses the front gives, and no callback raises."""
    rng = random.Random(7)
    base = _post(b"stream", extra=b"Expect: 100-continue\r\n") + _post(b"x", b"/v1/completions?q=1")
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            op = rng.randrange(3)
            if op == 0:
                data[i] = rng.randrange(256)
            elif op == 1:
                del data[i:i + rng.randint(1, 8)]
            else:
                data[i:i] = data[i:i + rng.randint(1, 8)]
        handler = Handler()
        proto, transport, _ = await _connect(handler)
        cut = rng.randrange(len(data))
        proto.data_received(bytes(data[:cut]))
        proto.data_received(bytes(data[cut:]))
        await _settle()
        allowed = {b"100", b"200", b"400", b"404", b"405", b"413", b"414", b"431", b"505"}
        for line in bytes(transport.out).split(b"\r\n"):
            if line.startswith(b"HTTP/1.1 "):
                assert line.split()[1] in allowed, (line, bytes(data))
        if not transport.closing:
            transport.close()
        await _settle()
        assert proto.task is not None and proto.task.done()


async def test_endless_chunked_trailers_are_cut_off() -> None:
    handler = Handler()
    proto, transport, _ = await _connect(handler)
    proto.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n"
                        b"2\r\nhi\r\n0\r\n")
    for i in range(300):
        proto.data_received(b"X-Trailer-%d: v\r\n" % i)
    await _settle()
    [(status, _, _)] = _responses(transport.out)
    assert status.startswith(b"HTTP/1.1 431") and transport.closing and handler.calls == []


async def test_nothing_is_answered_after_a_response_that_said_close() -> None:
    handler = Handler()
    proto, transport, _ = await _connect(handler)
    proto.data_received(_post(b"wait") + _post(b"second"))
    await _settle()
    proto.close_when_idle()  # shutdown began: the answer being written is the connection's last
    handler.release.set()
    await _settle()
    [(_, headers, body)] = _responses(transport.out)
    assert body == b"ok:wait" and headers[b"connection"] == b"close" and transport.closing
    assert [c[2] for c in handler.calls] == [b"wait"]


async def test_nothing_is_answered_after_a_response_cut_short() -> None:
    async def cut(gw: Any, request: Request, sink: ResponseSink) -> None:
        await sink.start({"Content-Type": "text/event-stream"})
        raise RuntimeError("a bug mid-stream")
    proto, transport, _ = await _connect(cut)
    proto.data_received(_post(b"a") + _post(b"b"))
    await _settle()
    assert bytes(transport.out).count(b"HTTP/1.1") == 1 and transport.closing
