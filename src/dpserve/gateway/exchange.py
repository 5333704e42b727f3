"""The proxy's view of the client side: `ResponseSink`, which both HTTP fronts implement.

The proxy never touches a server's request or response objects: it gets the path, headers and
body, and answers through a sink — a whole response, or a stream started once and written chunk
by chunk. `AiohttpSink` serves connections aiohttp handles; `gateway/front.py` has the lean one.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web


class ResponseSink(Protocol):
    """Where one proxied response goes. `write` raises ConnectionResetError once the client is gone."""

    async def whole(self, status: int, headers: dict[str, str], body: bytes) -> None:
        """Send a complete response (Content-Length framed)."""

    async def start(self, headers: dict[str, str]) -> None:
        """Send a 200 stream's head; `write` and then `end` follow."""

    async def write(self, data: bytes) -> None:
        """Send `data` now (b"" sends nothing); waits while the client reads slower than we write."""

    async def end(self) -> None:
        """End the stream."""


class AiohttpSink:
    """A ResponseSink over aiohttp: the handler returns `response` when the proxy is done."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response: web.StreamResponse | None = None

    async def whole(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.response = web.Response(status=status, body=body, headers=headers)

    async def start(self, headers: dict[str, str]) -> None:
        self.response = web.StreamResponse(status=200, headers=headers)
        await self.response.prepare(self._request)

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        await self.response.write(data)

    async def end(self) -> None:
        assert self.response is not None
        await self.response.write_eof()
