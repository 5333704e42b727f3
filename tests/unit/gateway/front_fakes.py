"""Fakes for the front's unit tests: a transport that records writes, a scripted handler, and a
`GatewayServer` over a stub gateway with test routes (real routing, access and limits)."""

from __future__ import annotations

import asyncio
from typing import Any

from dpserve.errors import HTTPError
from dpserve.gateway.access import Access, AccessPolicy
from dpserve.gateway.config import ClientLimits
from dpserve.gateway.exchange import ResponseSink
from dpserve.gateway.front import FrontProtocol
from dpserve.gateway.routes import Request, Route, RouteTable
from dpserve.gateway.server import GatewayServer
from dpserve.http_names import WORKER_HEADER

CHAT = b"/v1/chat/completions"


class FakeTransport:
    def __init__(self, peer: tuple[str, int] | None = None) -> None:
        self.out = bytearray()
        self.closing = False
        self.reading = True
        self.protocol: Any = None
        self.peer = peer

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


class Handler:
    """Answers by body: `stream`, `fail` (429 with Retry-After), `boom` (a bug), `wait`, else whole."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        self.release = asyncio.Event()
        self.cancelled = 0

    async def __call__(self, gw: Any, request: Request, sink: ResponseSink) -> None:
        body = request.body
        self.calls.append((request.path, dict(request.headers), body))
        if body == b"fail":
            raise HTTPError(429, "slow down", code="rate_limited", headers={"Retry-After": "2"})
        if body == b"boom":
            raise RuntimeError("a bug")
        if body.startswith(b"wait"):
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if body == b"stream":
            await sink.start({"Content-Type": "text/event-stream", WORKER_HEADER: "w1"})
            for part in (b"data: 1\n\n", b"", b"data: 2\n\n"):
                await sink.write(part)
            await sink.end()
            return
        await sink.whole(200, {"Content-Type": "application/json", WORKER_HEADER: "w0"}, b"ok:" + body)


class StubGateway:
    stopped = False

    async def start(self, listening: Any) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True


def make_server(handler: Any, **limits: Any) -> GatewayServer:
    """Proxied paths → `handler`; GET /health; POST /admin (ADMIN access) → `handler`."""
    async def health(gw: Any, request: Request, sink: ResponseSink) -> None:
        await sink.whole(200, {"Content-Type": "application/json"}, b'{"status":"ok"}')

    routes = RouteTable((Route("POST", CHAT.decode(), handler, Access.TENANT),
                         Route("POST", "/v1/completions", handler, Access.TENANT),
                         Route("GET", "/health", health, Access.PUBLIC),
                         Route("POST", "/admin", handler, Access.ADMIN)))
    access = AccessPolicy(None, None, False, lambda headers: None)
    return GatewayServer(StubGateway(), access, ClientLimits(**limits), routes)  # type: ignore[arg-type]


def connect(server: GatewayServer,
            peer: tuple[str, int] | None = ("10.0.0.7", 5555)) -> tuple[FrontProtocol, FakeTransport]:
    proto = server()
    transport = FakeTransport(peer)
    transport.protocol = proto
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport


async def open_front(handler: Any, **limits: Any) -> tuple[FrontProtocol, FakeTransport, GatewayServer]:
    server = make_server(handler, **limits)
    proto, transport = connect(server)
    return proto, transport, server


def post(body: bytes, path: bytes = CHAT, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST %s HTTP/%s\r\nHost: gw\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
            % (path, version, extra, len(body), body))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def responses(out: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Split Content-Length framed responses: (status line, headers lower-cased, body)."""
    found = []
    rest = bytes(out)
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        if status.startswith(b"HTTP/1.1 100 "):
            continue
        headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines)}
        n = int(headers.get(b"content-length", b"0"))
        found.append((status, headers, rest[:n]))
        rest = rest[n:]
    return found
