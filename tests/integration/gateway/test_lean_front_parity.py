"""A connection answers the same whatever it served before: the same request, once on a fresh
connection and once on a connection that asked for another route first (which, before the one
front, moved it to aiohttp for good), gets the same status, headers that matter and body —
admission (401, 429 + Retry-After), aliases, 4xx, streams."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from dpserve.http_names import CHAT_PATH as CHAT
from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import RunningGateway, chat, eventually

_COMPARED = ("content-type", "retry-after", WORKER_HEADER, "cache-control")


Answer = tuple[int, dict[str, str], Any]


async def _ask(gw: RunningGateway, body: bytes, extra: str, other_route_first: bool) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))
    try:
        if other_route_first:
            writer.write(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
            await reader.readuntil(b'{"status":"ok"}')
        writer.write(f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{extra}"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines)}
    if headers.get("transfer-encoding") == "chunked":
        payload = _unchunk(payload)
    content: Any = orjson.loads(payload) if headers.get("content-type", "").startswith("application/json") \
        else payload.decode()
    if isinstance(content, dict):
        for volatile in ("created", "id"):
            content.pop(volatile, None)
    return int(status_line.split()[1]), {k: v for k, v in headers.items() if k in _COMPARED}, content


def _unchunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2:]


async def _same_on_both(gw: RunningGateway, body: bytes, extra: str = "") -> tuple[int, Any]:
    fresh = await _ask(gw, body, extra, other_route_first=False)
    reused = await _ask(gw, body, extra, other_route_first=True)
    assert fresh == reused
    return fresh[0], fresh[2]


@pytest.mark.parametrize("body, status", [
    (orjson.dumps(chat("x")), 200),
    (orjson.dumps(chat("x", stream=True)), 200),
    (orjson.dumps(chat("x", model="nope")), 404),
    (b"{not json", 400),
    (orjson.dumps({"model": "fake-model"}), 400),
], ids=["whole", "stream", "unknown-model", "not-json", "no-messages"])
async def test_answers_match_on_reused_connections(fake_workers, gateway, body: bytes, status: int) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1, chunks=3)
    gw = await gateway([w])
    got, content = await _same_on_both(gw, body)
    assert got == status, content


async def test_api_keys_and_aliases_match_on_reused_connections(fake_workers, gateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - key: sk-good\n    tenant: team-a\n")
    [w] = await fake_workers(1, chunks=3)
    gw = await gateway([w], api_keys=keys, model_aliases=("nick=fake-model",))
    assert (await _same_on_both(gw, b"{not json"))[0] == 401
    assert (await _same_on_both(gw, orjson.dumps(chat()), "Authorization: Bearer sk-bad\r\n"))[0] == 401
    for stream in (False, True):
        status, content = await _same_on_both(gw, orjson.dumps(chat(model="nick", stream=stream)),
                                              "Authorization: Bearer sk-good\r\n")
        assert status == 200 and ('"nick"' in content and "fake-model" not in content if stream
                                else content["model"] == "nick")


async def test_shedding_matches_on_reused_connections(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1, slow_first_byte_s=2.0)
    gw = await gateway([w], max_inflight_per_worker=1, queue_size=0)
    held = asyncio.create_task(_ask(gw, orjson.dumps(chat("hold")), "", other_route_first=False))
    worker = gw.state.registry.get("w0")
    assert worker is not None
    await eventually(lambda: worker.in_flight == 1)
    status, content = await _same_on_both(gw, orjson.dumps(chat("shed")))
    assert status == 429 and content["error"]["type"] == "rate_limit_error"
    held.cancel()
