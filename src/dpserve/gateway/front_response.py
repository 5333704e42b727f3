"""Responses of the front (front.py): status line and headers as bytes, one write per response.

A whole answer is one `transport.write` (head and body together); a stream is the head, then one
chunk of HTTP/1.1 chunked encoding per relayed piece, written as it arrives (TCP_NODELAY is set on
the socket, so nothing waits for Nagle), and the terminating chunk. An answer to HEAD is the head
alone. A refused connection ends with a lingering close (`linger_close`).
"""

from __future__ import annotations

import asyncio
import contextlib
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING

import orjson

from dpserve.errors import HTTPError, error_body

if TYPE_CHECKING:
    from dpserve.gateway.front import FrontProtocol

_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
# Body sizes above this are written separately rather than copied into one buffer with the head.
_COPY_LIMIT = 16 * 1024
CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE_10 = b"Connection: keep-alive\r\n"  # an HTTP/1.0 client closes unless told otherwise
# How long a refused connection keeps reading (and dropping) what the client still sends.
LINGER_S = 2.0


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status


def date_line(now: int) -> bytes:
    """The `Date:` header line for the second `now` (the server caches it per second)."""
    return b"Date: %s\r\n" % formatdate(now, usegmt=True).encode()


def head_bytes(status: int, headers: dict[str, str], connection: bytes, date: bytes) -> bytes:
    """Status line and headers, without the framing header and the blank line; `connection` is the
    `Connection:` line, or b"" for HTTP/1.1's default, keep-alive."""
    parts = [_status_line(status)]
    parts += [f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items()]
    parts.append(date)
    parts.append(connection)
    return b"".join(parts)


def error_bytes(exc: HTTPError, connection: bytes, date: bytes, head_only: bool = False) -> bytes:
    """A whole OpenAI-style JSON error response, the one error shape of every dpserve server."""
    body = orjson.dumps(error_body(exc.status, exc.message, exc.code, exc.param))
    headers = {"Content-Type": "application/json", **exc.headers}
    head = head_bytes(exc.status, headers, connection, date)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + (b"" if head_only else body)


def linger_close(transport: asyncio.Transport, last: bytes) -> bool:
    """Write `last` (a refusal), then close lingering; False when the transport cannot half-close
    (the caller closes it). Closing with unread input makes the kernel reset the connection, which
    can destroy the answer before the client reads it: send EOF, then read and drop for a moment."""
    transport.write(last)
    if not transport.can_write_eof():
        return False
    transport.write_eof()
    timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)
    transport.set_protocol(_Discard(timer))
    transport.resume_reading()
    return True


class _Discard(asyncio.Protocol):
    """A refused connection's last moments: what the client still sends is dropped (see above)."""

    def __init__(self, timer: asyncio.TimerHandle) -> None:
        self._timer = timer

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the client closed its side too: the transport closes now

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


class LeanSink:
    """The ResponseSink (exchange.py) of one request on a FrontProtocol connection."""

    __slots__ = ("_conn", "_connection", "_head_only", "chunked", "complete", "started")

    def __init__(self, conn: FrontProtocol, keep_alive: bool, chunked: bool, head_only: bool = False) -> None:
        self._conn = conn
        self.chunked = chunked  # HTTP/1.1; an HTTP/1.0 client gets a stream unframed, ended by the close
        self._connection = (CLOSE if not keep_alive else b"" if chunked else _KEEP_ALIVE_10)
        self._head_only = head_only  # HEAD: the answer's head, no body
        self.started = False
        self.complete = False

    async def whole(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.started = True
        conn = self._conn
        head = head_bytes(status, headers, CLOSE if conn.ending else self._connection, conn.date_line())
        if status == 204:  # no Content-Length on a 204 (RFC 9110 8.6)
            head, body = head + b"\r\n", b""
        else:
            head += b"Content-Length: %d\r\n\r\n" % len(body)
        if self._head_only:
            body = b""
        if len(body) <= _COPY_LIMIT:
            self._send(head + body)
        else:
            self._send(head, body)
        self.complete = True
        if conn.write_paused:  # a client that does not read: answer its next request once it does
            with contextlib.suppress(ConnectionResetError):  # gone: the connection's loop sees it
                await conn.drained()

    async def start(self, headers: dict[str, str]) -> None:
        self.started = True
        conn = self._conn
        if self.chunked:
            head = head_bytes(200, headers, CLOSE if conn.ending else self._connection, conn.date_line())
            self._send(head + b"Transfer-Encoding: chunked\r\n\r\n")
        else:  # unframed: only the close can end it
            self._send(head_bytes(200, headers, CLOSE, conn.date_line()) + b"\r\n")

    async def write(self, data: bytes) -> None:
        if not data:
            return
        conn = self._conn
        if conn.closed:
            raise ConnectionResetError("the client closed the connection")
        if self.chunked:
            self._send(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            self._send(data)
        if conn.write_paused:
            await conn.drained()

    async def end(self) -> None:
        if self.chunked:
            self._send(b"0\r\n\r\n")
        self.complete = self.chunked  # unframed: only the close ends it

    def error(self, exc: HTTPError) -> None:
        self.started = True
        conn = self._conn
        self._send(error_bytes(exc, CLOSE if conn.ending else self._connection, conn.date_line(),
                               self._head_only))
        self.complete = True

    def _send(self, data: bytes, more: bytes | None = None) -> None:
        transport = self._conn.transport
        if self._conn.closed or transport is None or transport.is_closing():
            return  # the client is gone; the request's task is being cancelled
        transport.write(data)
        if more is not None:
            transport.write(more)
