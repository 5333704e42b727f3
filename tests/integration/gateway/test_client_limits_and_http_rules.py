"""What a client can make the gateway hold or answer, over real sockets (issue 13): oversize and
slow requests, too many connections, half-closes, HTTP/1.1 rules, batched prompts, and the one 503
of an outage. Each runs while /health is watched, and ends with a normal request answered."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import chat
from tests.integration.gateway.hardening import CHAT, ask, error_of, read_response, request, still_serving


async def test_announced_oversize_bodies_are_refused_before_they_are_sent(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    gw = await gateway([w])
    async with still_serving(gw.port):
        conns = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(8)]
        for _, writer in conns:  # 60 MB announced, not one byte of it sent
            writer.write(f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 60000000\r\n\r\n".encode())
        for reader, writer in conns:
            status, headers, body = await read_response(reader)
            assert status == 413 and headers["connection"] == "close" and error_of(body)
            writer.close()
        assert gw.server.budget.held == 0 and w.stats.requests == 0


async def test_bodies_past_the_shared_budget_are_refused_and_memory_stays_bounded(  # type: ignore[no-untyped-def]
        fake_workers, gateway) -> None:
    [w] = await fake_workers(1)
    gw = await gateway([w], max_request_bytes=64 * 1024, max_buffered_request_bytes=256 * 1024)
    budget = gw.server.budget
    async with still_serving(gw.port):
        conns = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(8)]
        for _, writer in conns:  # each announces 60 KiB and sends half of it, then stalls
            writer.write(f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Length: {60 * 1024}\r\n\r\n".encode()
                         + b" " * (30 * 1024))
            await writer.drain()
        await asyncio.sleep(0.2)
        assert budget.held <= budget.limit
        refused = 0
        for reader, _ in conns[4:]:  # 4 × 60 KiB fit in 256 KiB; the others are refused at once
            status, headers, _ = await read_response(reader)
            refused += status == 503 and headers.get("retry-after") == "1"
        assert refused == 4 and budget.held == 4 * 60 * 1024
        for _, writer in conns:
            writer.close()
        for _ in range(100):
            if budget.held == 0:
                break
            await asyncio.sleep(0.02)
        assert budget.held == 0


@pytest.mark.parametrize("first, drip", [
    (f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\n".encode(), b"X"),  # a header, a byte at a time
    (f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000\r\n\r\n".encode(), b"{"),  # the body
], ids=["slow-headers", "slow-body"])
async def test_a_request_dripping_in_is_cut_off_with_408(fake_workers, gateway, first: bytes,  # type: ignore[no-untyped-def]
                                                        drip: bytes) -> None:
    [w] = await fake_workers(1)
    gw = await gateway([w], header_timeout_s=0.5, body_timeout_s=0.5)
    async with still_serving(gw.port):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        started = time.monotonic()
        writer.write(first)
        answer = asyncio.create_task(read_response(reader))
        while not answer.done() and time.monotonic() - started < 5:
            writer.write(drip)
            await asyncio.sleep(0.1)
        status, _, body = await answer
        assert status == 408 and error_of(body) and time.monotonic() - started < 3
        writer.close()


async def test_connections_over_the_cap_are_refused_and_the_rest_keep_working(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    gw = await gateway([w], max_connections=6)
    async with still_serving(gw.port):  # the /health watcher holds one connection
        idle = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(5)]
        for _ in range(100):
            if len(gw.server.connections) == 6:
                break
            await asyncio.sleep(0.01)
        status, headers, body = await ask(gw.port, request("POST", CHAT, orjson.dumps(chat("over"))))
        assert status == 503 and headers["retry-after"] == "1"
        assert "--max-connections" in error_of(body)["message"]
        reader, writer = idle[0]
        writer.write(request("POST", CHAT, orjson.dumps(chat("held"))))
        assert (await read_response(reader))[0] == 200
        for _, writer in idle:
            writer.close()
        for _ in range(100):
            if len(gw.server.connections) <= 1:
                break
            await asyncio.sleep(0.02)


async def test_a_half_closed_client_gets_its_answer(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1, slow_first_byte_s=0.3)
    gw = await gateway([w])
    async with still_serving(gw.port):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request("POST", CHAT, orjson.dumps(chat("half"))))
        writer.write_eof()  # shutdown(SHUT_WR): nothing more will come
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers[WORKER_HEADER] == "w0"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then the gateway closes
        writer.close()


@pytest.mark.parametrize("data, status", [
    (f"POST {CHAT} HTTP/1.1\r\nContent-Length: 2\r\n\r\n{{}}".encode(), 400),
    (f"POST {CHAT} HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 2\r\n\r\n{{}}".encode(), 400),
    (f"POST {CHAT} HTTP/2.0\r\nHost: a\r\nContent-Length: 2\r\n\r\n{{}}".encode(), 505),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),  # HTTP/2 with prior knowledge
], ids=["no-host", "two-hosts", "http2-request-line", "h2-preface"])
async def test_requests_breaking_http11_rules_get_json_errors(fake_workers, gateway, data: bytes,  # type: ignore[no-untyped-def]
                                                              status: int) -> None:
    [w] = await fake_workers(1)
    gw = await gateway([w])
    async with still_serving(gw.port):
        got, headers, body = await ask(gw.port, data)
        assert got == status and headers["content-type"] == "application/json" and error_of(body)
        assert w.stats.requests == 0


async def test_a_batch_of_token_id_prompts_is_passed_on(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1)
    gw = await gateway([w])
    body = orjson.dumps({"model": "fake-model", "prompt": [[1, 2, 3], [4, 5]]})
    status, _, _ = await ask(gw.port, request("POST", "/v1/completions", body))
    assert status == 200 and orjson.loads(w.stats.bodies[-1])["prompt"] == [[1, 2, 3], [4, 5]]


async def test_the_last_replica_dying_gives_in_flight_and_new_requests_the_same_503(
        fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1, slow_first_byte_s=1.0)
    gw = await gateway([w], health_check_interval_s=5.0)  # the outage is found by the requests
    async with still_serving(gw.port):
        in_flight = asyncio.create_task(ask(gw.port, request("POST", CHAT, orjson.dumps(chat("x")))))
        await asyncio.sleep(0.3)
        await w.kill()
        answers = [await in_flight, await ask(gw.port, request("POST", CHAT, orjson.dumps(chat("y"))))]
        for status, headers, body in answers:
            assert (status, headers.get("retry-after")) == (503, "1"), body
            assert error_of(body)["code"] == "no_healthy_worker"
        w.knobs.slow_first_byte_s = 0.0
        await w.revive()
        for _ in range(100):  # back once a health probe (every 5 s here) or the next add sees it
            await gw.state.health.probe(gw.state.registry.all()[0])
            if gw.state.registry.any_ready():
                break
            await asyncio.sleep(0.05)
