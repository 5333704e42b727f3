"""Requests as the front (front.py) parses them: one message, and the limits on its head.

A request URL or header field over 8190 bytes, more than 128 headers, or a head over 64 KiB
(counted as it arrives, so a header that never ends is cut off) is refused with a JSON 414/431
(the limits of aiohttp's server, which the gateway used before). The body's limits are flags
(`ClientLimits`, gateway/config.py).
"""

from __future__ import annotations

import zlib

from dpserve.errors import HTTPError

MAX_FIELD_BYTES = 8190
MAX_HEADERS = 128
MAX_HEAD_BYTES = 64 * 1024
# Headers of an upgrade offer (h2c, websocket) the front declines by answering in HTTP/1.1.
_UPGRADE = frozenset({"upgrade", "http2-settings", "expect"})


class Refusal(Exception):
    """Raised inside a parser callback: answer `status` with `message` and close the connection."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.error = HTTPError(status, message, headers=headers)


class Message:
    """One parsed request. `reserved`: the bytes of it counted in the server's body budget."""

    __slots__ = ("body", "encoding", "expect_continue", "headers", "hosts", "keep_alive", "length", "method",
                 "reserved", "size", "url", "version")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.reserved = 0
        self.method = b""
        self.keep_alive = True
        self.version = "1.1"
        self.expect_continue = False
        self.encoding: str | None = None  # Content-Encoding, when the request has one
        self.length: str | None = None  # Content-Length as sent (llhttp has checked it)
        self.hosts = 0  # Host headers seen

    @property
    def path(self) -> bytes:
        return self.url.partition(b"?")[0]

    def decoded_body(self, max_body: int) -> bytes:
        """The body with its Content-Encoding undone (gzip or deflate, as aiohttp's server does);
        415 for other codings, 413 when it inflates past `max_body`."""
        body = b"".join(self.body)
        coding = (self.encoding or "").strip().lower()
        if coding in ("", "identity"):
            return body
        if coding not in ("gzip", "deflate"):
            raise HTTPError(415, f"Content-Encoding {self.encoding!r} is not supported (gzip, deflate)")
        raw = coding == "deflate" and body[:1] and body[0] & 0x0F != 8  # deflate without zlib header
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if coding == "gzip" else
                                      -zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        try:
            out = inflater.decompress(body, max_body + 1)
        except zlib.error as exc:
            raise HTTPError(400, f"request body is not valid {coding} data: {exc}") from exc
        if len(out) > max_body:
            raise HTTPError(413, f"request body is larger than {max_body} bytes once decompressed")
        if not inflater.eof:
            raise HTTPError(400, f"request body is truncated {coding} data")
        return out

    def content_length(self) -> int | None:
        """The announced body size, when the request says one."""
        if self.length is None:
            return None
        try:
            return int(self.length)
        except ValueError:
            return None

    def head_without_upgrade(self) -> bytes:
        """The request head again, minus its upgrade offer, for a fresh parser to read the body after.

        llhttp stops at the end of the head of a request offering an upgrade (`Upgrade: h2c`, as
        `curl --http2` sends); the front answers such requests in HTTP/1.1, as a server may.
        """
        head = [b"%s %s HTTP/%s\r\n" % (self.method, self.url, self.version.encode())]
        for name, value in self.headers:
            low = name.lower()
            if low == "connection":
                value = ", ".join(t for t in (s.strip() for s in value.split(","))
                                  if t.lower() not in ("upgrade", "http2-settings"))
            if low not in _UPGRADE and (value or low != "connection"):
                head.append(f"{name}: {value}\r\n".encode("latin-1"))
        return b"".join(head) + b"\r\n"
