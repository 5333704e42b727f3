"""The front's limits and HTTP rules over a fake transport: Host and version, announced and buffered
body sizes, read deadlines, the connection cap, half-close, HEAD, 404/405 and access."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from dpserve.gateway.front import FrontProtocol
from tests.unit.gateway.front_fakes import Handler, connect, make_server, open_front, post, responses, settle


def _error(body: bytes) -> dict[str, object]:
    err = orjson.loads(body)["error"]
    assert set(err) >= {"message", "type", "code"}
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize("head, status", [
    (b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", b"400"),  # no Host
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}", b"400"),
    (b"POST /v1/chat/completions HTTP/1.0\r\nHost: a\r\nhost: b\r\nContent-Length: 2\r\n\r\n{}", b"400"),
    (b"POST /v1/chat/completions HTTP/2.0\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}", b"505"),
    (b"GET /health HTTP/0.9\r\n\r\n", b"505"),
], ids=["no-host", "two-hosts", "two-hosts-http10", "http2-line", "http09"])
async def test_http_rules_are_enforced_with_json_errors(head: bytes, status: bytes) -> None:
    handler = Handler()
    proto, transport, _ = await open_front(handler)
    proto.data_received(head)
    await settle()
    [(line, headers, body)] = responses(transport.out)
    assert line.split()[1] == status and headers[b"connection"] == b"close" and _error(body)
    assert handler.calls == [] and transport.closing


async def test_http10_needs_no_host() -> None:
    proto, transport, _ = await open_front(Handler())
    proto.data_received(b"GET /health HTTP/1.0\r\n\r\n")
    await settle()
    assert responses(transport.out)[0][2] == b'{"status":"ok"}'


async def test_an_announced_body_over_the_limit_is_refused_before_it_is_read() -> None:
    handler = Handler()
    proto, transport, server = await open_front(handler, max_request_bytes=1024)
    proto.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 60000000\r\n\r\n")
    await settle()
    [(status, _, body)] = responses(transport.out)
    assert status.startswith(b"HTTP/1.1 413") and "--max-request-bytes" in str(_error(body)["message"])
    assert handler.calls == [] and server.budget.held == 0


async def test_buffered_bodies_share_one_budget_and_give_it_back() -> None:
    handler = Handler()
    server = make_server(handler, max_request_bytes=2048, max_buffered_request_bytes=3000)
    (first, first_out), (second, second_out) = connect(server), connect(server)
    first.data_received(post(b"wait" + b" " * 1996))  # 2000 bytes held while it is answered
    await settle()
    assert server.budget.held == 2000
    second.data_received(post(b"x" * 1500))
    await settle()
    [(status, headers, _)] = responses(second_out.out)
    assert status.startswith(b"HTTP/1.1 503") and headers[b"retry-after"] == b"1"
    handler.release.set()
    await settle()
    assert server.budget.held == 0 and responses(first_out.out)[0][0] == b"HTTP/1.1 200 OK"
    third, third_out = connect(server)
    third.data_received(post(b"x" * 1500))
    await settle()
    assert responses(third_out.out)[0][2] == b"ok:" + b"x" * 1500 and server.budget.held == 0


async def test_chunked_bodies_are_counted_as_they_arrive() -> None:
    server = make_server(Handler(), max_request_bytes=1024, max_buffered_request_bytes=1024)
    proto, transport = connect(server)
    proto.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n200\r\n" + b"a" * 512 + b"\r\n")
    await settle()
    assert server.budget.held == 512
    proto.data_received(b"300\r\n" + b"a" * 768 + b"\r\n")
    await settle()
    [(status, _, _)] = responses(transport.out)
    assert status.startswith(b"HTTP/1.1 413")
    await settle()
    assert server.budget.held == 0


@pytest.mark.parametrize("data, part", [
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Slow: a", "headers"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n{\"a", "body"),
])
async def test_a_request_too_slow_to_arrive_is_408(data: bytes, part: str) -> None:
    handler = Handler()
    proto, transport, server = await open_front(handler, header_timeout_s=0.05, body_timeout_s=0.05)
    proto.data_received(data)
    for _ in range(300):
        await asyncio.sleep(0.01)
        if transport.out:
            break
    [(status, _, body)] = responses(transport.out)
    assert status.startswith(b"HTTP/1.1 408") and part in str(_error(body)["message"])
    assert handler.calls == [] and server.budget.held == 0
    await server.stop(1.0)


async def test_connections_over_the_cap_get_503_without_being_read() -> None:
    server = make_server(Handler(), max_connections=2)
    first, _ = connect(server)
    connect(server)
    third, third_out = connect(server)
    await settle()
    [(status, headers, body)] = responses(third_out.out)
    assert status.startswith(b"HTTP/1.1 503") and headers[b"retry-after"] == b"1" and _error(body)
    assert len(server.connections) == 2 and third not in server.connections
    first.connection_lost(None)
    assert len(server.connections) == 1


async def test_a_half_closed_client_gets_its_answers_then_the_close() -> None:
    handler = Handler()
    proto, transport, _ = await open_front(handler)
    proto.data_received(post(b"one") + post(b"two"))
    assert proto.eof_received() is True  # the transport stays open for the answers
    await settle()
    assert [b for _, _, b in responses(transport.out)] == [b"ok:one", b"ok:two"] and transport.closing


async def test_a_half_closed_client_waiting_for_an_answer_is_probed() -> None:
    """After EOF an unanswered HTTP/1.1 client gets `100 Continue` probes (a gone one then fails a
    write and the handler is cancelled); the real answer follows."""
    handler = Handler()
    proto, transport, _ = await open_front(handler)
    proto.data_received(post(b"wait"))
    await settle()
    proto.eof_received()
    assert transport.out == b"HTTP/1.1 100 Continue\r\n\r\n"
    handler.release.set()
    await settle()
    assert responses(transport.out)[0][2] == b"ok:wait" and transport.closing


async def test_a_request_cut_short_by_the_close_is_dropped() -> None:
    handler = Handler()
    proto, transport, server = await open_front(handler)
    proto.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n{\"a")
    await settle()
    proto.eof_received()
    await settle()
    assert transport.out == b"" and transport.closing and server.budget.held == 0 and handler.calls == []


async def test_head_gets_the_head_of_the_get_answer() -> None:
    proto, transport, _ = await open_front(Handler())
    proto.data_received(b"HEAD /health HTTP/1.1\r\nHost: gw\r\n\r\nGET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
    await settle()
    head, _, rest = bytes(transport.out).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 15" in head
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b'{"status":"ok"}')


async def test_unknown_routes_are_404_and_other_methods_405_with_allow() -> None:
    proto, transport, _ = await open_front(Handler())
    proto.data_received(b"GET /nope HTTP/1.1\r\nHost: gw\r\n\r\nDELETE /health HTTP/1.1\r\nHost: gw\r\n\r\n"
                        + post(b"after"))
    await settle()
    (s1, _, b1), (s2, h2, b2), (_, _, b3) = responses(transport.out)
    assert s1.startswith(b"HTTP/1.1 404") and _error(b1)["type"] == "not_found_error"
    assert s2.startswith(b"HTTP/1.1 405") and h2[b"allow"] == b"GET, HEAD" and _error(b2)
    assert b3 == b"ok:after"


@pytest.mark.parametrize("path", [b"/v1/chat/completions", b"/admin"])
async def test_a_bug_in_any_handler_is_a_json_500_logged_once(path: bytes,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    proto, transport = connect(make_server(Handler()), ("127.0.0.1", 4000))
    with caplog.at_level(logging.ERROR, logger="dpserve.gateway.front"):
        proto.data_received(post(b"boom", path) + post(b"after", path))
        await settle()
    (status, headers, body), (_, _, after) = responses(transport.out)
    assert status.startswith(b"HTTP/1.1 500") and headers[b"content-type"] == b"application/json"
    assert _error(body)["type"] == "internal_error" and after == b"ok:after"
    assert [r.exc_info is not None for r in caplog.records] == [True]


async def test_admin_routes_without_an_admin_key_answer_loopback_peers_only() -> None:
    handler = Handler()
    server = make_server(handler)
    remote, remote_out = connect(server, ("192.0.2.9", 4000))
    local, local_out = connect(server, ("::ffff:127.0.0.1", 4001, 0, 0))
    for proto in (remote, local):
        proto.data_received(post(b"add", b"/admin"))
    await settle()
    [(status, _, body)] = responses(remote_out.out)
    assert status.startswith(b"HTTP/1.1 403") and _error(body)["code"] == "admin_loopback_only"
    assert responses(local_out.out)[0][2] == b"ok:add"


async def test_a_bug_while_reading_a_request_is_a_json_500_too(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    def broken(self: FrontProtocol, url: bytes) -> None:
        raise RuntimeError("a bug in a parser callback")
    monkeypatch.setattr(FrontProtocol, "on_url", broken)
    proto, transport, _ = await open_front(Handler())
    with caplog.at_level(logging.ERROR, logger="dpserve.gateway.front_reading"):
        proto.data_received(post(b"x"))
        await settle()
    [(status, _, body)] = responses(transport.out)
    assert status.startswith(b"HTTP/1.1 500") and _error(body)["type"] == "internal_error"
    assert transport.closing and [r.exc_info is not None for r in caplog.records] == [True]
