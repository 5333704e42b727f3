"""Requests as the lean front (front.py) parses them: one message, the size limits, re-encoding.

Limits follow aiohttp's server, so that a request is refused the same whichever side parses it:
a request URL or header field over 8190 bytes, more than 128 headers, or a head over 64 KiB
(counted as it arrives, so a header that never ends is cut off) is refused with a JSON 414/431.
"""

from __future__ import annotations

import zlib

from dpserve.errors import HTTPError
from dpserve.gateway.routing_text import CHAT_PATH, COMPLETIONS_PATH

MAX_FIELD_BYTES = 8190
MAX_HEADERS = 128
MAX_HEAD_BYTES = 64 * 1024
_HOT_PATHS = frozenset({CHAT_PATH.encode(), COMPLETIONS_PATH.encode()})
# Headers the re-encoded request for aiohttp must not repeat: the body is sent whole, once.
_FRAMING = frozenset({"content-length", "transfer-encoding", "expect"})
# Headers of an upgrade offer (h2c, websocket) the front declines by answering in HTTP/1.1.
_UPGRADE = frozenset({"upgrade", "http2-settings", "expect"})


class Refusal(Exception):
    """Raised inside a parser callback: answer `status` with `message` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Message:
    """One parsed request."""

    __slots__ = ("body", "encoding", "expect_continue", "headers", "keep_alive", "method", "size", "url",
                 "version")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.method = b""
        self.keep_alive = True
        self.version = "1.1"
        self.expect_continue = False
        self.encoding: str | None = None  # Content-Encoding, when the request has one

    @property
    def path(self) -> bytes:
        return self.url.partition(b"?")[0]

    def is_hot(self) -> bool:
        return self.method == b"POST" and self.path in _HOT_PATHS

    def has_host(self) -> bool:
        return any(name.lower() == "host" for name, _ in self.headers)

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
        """The announced body size, when the request says one (read only on rare paths)."""
        for name, value in self.headers:
            if name.lower() == "content-length" and value.strip().isdigit():
                return int(value)
        return None

    def reencode(self) -> bytes:
        """The request as bytes again, for aiohttp: the body whole, framed by Content-Length."""
        body = b"".join(self.body)
        head = [b"%s %s HTTP/%s\r\n" % (self.method, self.url, self.version.encode())]
        head += [f"{k}: {v}\r\n".encode("latin-1") for k, v in self.headers if k.lower() not in _FRAMING]
        head.append(b"Content-Length: %d\r\n\r\n" % len(body))
        return b"".join(head) + body

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
