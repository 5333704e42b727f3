"""Helpers for the gateway's hostile-client tests: raw HTTP over sockets, and `still_serving`, which
watches /health on its own connection while a scenario runs and then sends a normal request."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from dpserve.http_names import CHAT_PATH as CHAT
from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import chat

# The gateway's /health must answer within this, whatever else it is doing (generous: CI is shared).
HEALTH_TIMEOUT_S = 2.0


def request(method: str, path: str, body: bytes = b"", extra: str = "", version: str = "1.1") -> bytes:
    return (f"{method} {path} HTTP/{version}\r\nHost: gw\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


Answer = tuple[int, dict[str, str], bytes]


async def read_response(reader: asyncio.StreamReader, timeout_s: float = 10.0,
                        head_only: bool = False) -> Answer:
    """One response: (status, headers lower-cased, body unchunked); interim 1xx answers skipped."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)).decode("latin-1")
    while head.startswith("HTTP/1.1 100 "):  # interim answers (100 Continue) before the final one
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)).decode("latin-1")
    status_line, *lines = head.strip().split("\r\n")
    status = int(status_line.split()[1])
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines)}
    if head_only or status == 204:
        return status, headers, b""
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readexactly(2)
    elif "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout_s)
    else:
        body = await asyncio.wait_for(reader.read(), timeout_s)  # framed by the close
    return status, headers, body


async def ask(port: int, data: bytes, timeout_s: float = 10.0) -> Answer:
    """One request on a fresh connection; the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await read_response(reader, timeout_s)
    finally:
        writer.close()


def error_of(body: bytes) -> dict[str, Any]:
    err = orjson.loads(body)["error"]
    assert set(err) >= {"message", "type", "code"}, err
    return err  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def still_serving(port: int, auth: str = "") -> AsyncIterator[None]:
    """/health is asked every 50 ms on one keep-alive connection while the block runs: every answer
    must be a 200 within HEALTH_TIMEOUT_S. Afterwards a normal chat request (with `auth`, an
    Authorization header line, when tenant keys are on) must be answered."""
    slowest = 0.0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal slowest
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not stop.is_set():
                started = time.monotonic()
                writer.write(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
                status, _, _ = await read_response(reader, HEALTH_TIMEOUT_S)
                assert status == 200
                slowest = max(slowest, time.monotonic() - started)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
        finally:
            writer.close()

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        stop.set()
        await watcher  # raises if /health failed or was late
    assert slowest < HEALTH_TIMEOUT_S
    status, headers, body = await ask(port, request("POST", CHAT, orjson.dumps(chat("after")), auth))
    assert status == 200 and WORKER_HEADER in headers, body
