"""The handlers' view of the client side: `ResponseSink` (the front's `LeanSink` implements it).

Handlers and the proxy never touch the server's connection: they get the path, headers and
body, and answer through a sink — a whole response, or a stream started once and written chunk
by chunk. Tests give the proxy a fake sink.
"""

from __future__ import annotations

from typing import Protocol


class ResponseSink(Protocol):
    """Where one proxied response goes. `write` raises ConnectionResetError once the client is gone."""

    started: bool  # the response's head went out (`whole` or `start`)

    async def whole(self, status: int, headers: dict[str, str], body: bytes) -> None:
        """Send a complete response (Content-Length framed)."""

    async def start(self, headers: dict[str, str]) -> None:
        """Send a 200 stream's head; `write` and then `end` follow."""

    async def write(self, data: bytes) -> None:
        """Send `data` now (b"" sends nothing); waits while the client reads slower than we write."""

    async def end(self) -> None:
        """End the stream."""
