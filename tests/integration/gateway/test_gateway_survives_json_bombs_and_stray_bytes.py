"""The gateway against two more hostile clients (issue 13, second review), over real sockets:
bodies under the size limit made of millions of tiny JSON values (each once cost the event loop
~0.5 s and the process ~200 MiB to parse), and connections that send empty lines forever without
starting a request (they once held --max-connections slots past every deadline). Each runs while
/health is watched, and ends with a normal request answered."""

from __future__ import annotations

import asyncio
import time

import orjson

from dpserve.json_body import LARGE_BODY_BYTES, MAX_JSON_COMMAS, MAX_JSON_CONTAINERS, MAX_JSON_QUOTES
from tests.integration.gateway.hardening import CHAT, ask, error_of, read_response, request, still_serving

BODY_BYTES = 8 * 1024 * 1024
COMPLETIONS = "/v1/completions"


def _filled(element: bytes) -> bytes:
    """A completion body of about BODY_BYTES whose `x` is a list of `element`s."""
    count = (BODY_BYTES - 64) // (len(element) + 1)
    return b'{"prompt":"hi","max_tokens":1,"x":[' + b",".join([element] * count) + b"]}"


BOMBS = {"objects": _filled(b"{}"), "arrays": _filled(b"[]"), "strings": _filled(b'"a"'),
         "numbers": _filled(b"1"), "keys": b'{"prompt":"hi","x":{'
         + b",".join(b'"k%d":1' % i for i in range(MAX_JSON_QUOTES)) + b"}}"}


async def test_json_bombs_under_the_size_limit_are_400_in_parallel(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    gw = await gateway([w], max_buffered_request_bytes=256 * 1024 * 1024)
    async with still_serving(gw.port):
        for name, body in BOMBS.items():
            # 8 at once, as the reviewer sent them; each is refused before it is parsed
            answers = await asyncio.gather(*(ask(gw.port, request("POST", COMPLETIONS, body), timeout_s=60)
                                             for _ in range(8)))
            for status, _, answer in answers:
                assert status == 400, (name, answer[:200])
                assert error_of(answer)["code"] == "json_too_complex", answer[:200]
    assert w.stats.requests == 1  # only still_serving's normal request reached the replica


async def test_a_large_body_within_the_structure_limits_is_passed_on(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    gw = await gateway([w])
    # (the fake replica takes 1 MiB bodies: small ids keep these under it)
    tokens = [7] * (MAX_JSON_COMMAS - 10)  # a token-id prompt at the comma limit
    messages = [{"role": "user", "content": "x"}] * (MAX_JSON_QUOTES // 8 - 2)  # at the quote limit
    assert len(messages) < MAX_JSON_CONTAINERS
    async with still_serving(gw.port):
        for path, body in ((COMPLETIONS, {"prompt": tokens, "max_tokens": 1}),
                           (CHAT, {"messages": messages, "max_tokens": 1})):
            raw = orjson.dumps(body)
            assert len(raw) >= LARGE_BODY_BYTES
            status, _, answer = await ask(gw.port, request("POST", path, raw), timeout_s=60)
            assert status == 200, answer[:200]


async def test_empty_lines_do_not_keep_a_connection_past_the_header_deadline(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    # keep-alive far longer than the test: only the header deadline can close these connections
    gw = await gateway([w], header_timeout_s=0.5, keepalive_timeout_s=600, max_connections=5)
    async with still_serving(gw.port):  # the /health watcher holds one connection
        drippers = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(4)]
        started = time.monotonic()
        closed = [False] * len(drippers)
        while not all(closed) and time.monotonic() - started < 30:  # generous: a loaded CI machine
            for i, (reader, writer) in enumerate(drippers):
                if not closed[i]:
                    writer.write(b"\r\n")
                    closed[i] = reader.at_eof() or writer.is_closing()
                    if not closed[i]:
                        try:
                            closed[i] = await asyncio.wait_for(reader.read(1), 0.02) == b""
                        except TimeoutError:
                            pass
                        except ConnectionResetError:  # closed by the gateway: our next line got a reset
                            closed[i] = True
            await asyncio.sleep(0.1)
        assert all(closed), "a connection sending only empty lines was kept open"
        # the slots are free again: a normal request on a new connection is answered
        status, _, body = await ask(gw.port, request("POST", CHAT, orjson.dumps({"messages": [
            {"role": "user", "content": "hi"}]})))
        assert status == 200, body[:200]


async def test_empty_lines_before_and_after_requests_are_still_fine(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    """RFC 9112 2.2: a server should ignore empty lines before a request line (some clients send
    one after a POST body)."""
    [w] = await fake_workers(1)
    gw = await gateway([w])
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    body = orjson.dumps({"messages": [{"role": "user", "content": "hi"}]})
    for _ in range(3):
        writer.write(b"\r\n" + request("POST", CHAT, body) + b"\r\n")
        status, _, answer = await read_response(reader)
        assert status == 200, answer[:200]
    writer.close()
