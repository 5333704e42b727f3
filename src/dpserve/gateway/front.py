"""Lean HTTP/1.1 front for the two proxied routes: an asyncio protocol with httptools.

Why: aiohttp's server side (parsing into `web.Request`, routing, middlewares, response objects)
measured 33–50 µs of CPU per request on this project's VM for a trivial handler, against 14–17 µs
for a bare protocol doing the same work with httptools (benchmarks.md, gateway section); the
gateway pays it on every proxied request.

Every connection starts on `FrontProtocol`. `POST /v1/chat/completions` and `POST /v1/completions`
are answered here; the first request for any other route hands the connection to aiohttp at that
request boundary (the parsed request is re-encoded for aiohttp's protocol, and the connection
stays there), so every other route keeps aiohttp's routing, middlewares and error pages.

Hostile or odd clients: aiohttp's size limits apply (front_request.py) and bad requests get JSON
errors in order, then a lingering close; upgrade offers are answered in HTTP/1.1; a client
pipelining without reading its answers is no longer read from; gzip/deflate bodies are inflated.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import TYPE_CHECKING

import httptools
from multidict import CIMultiDict

from dpserve.errors import HTTPError
from dpserve.gateway.front_request import MAX_FIELD_BYTES, MAX_HEAD_BYTES, MAX_HEADERS, Message, Refusal
from dpserve.gateway.front_response import CLOSE, LeanSink, error_bytes

if TYPE_CHECKING:
    from dpserve.gateway.front_server import FrontServer

logger = logging.getLogger(__name__)

# Parsed requests a connection may hold unanswered before the front stops reading from it.
_MAX_PIPELINED = 16
# Upgrade offers declined within one read (each re-reads the rest of that read).
_MAX_UPGRADES_PER_READ = 8
# How long a refused connection keeps reading (and dropping) what the client still sends.
_LINGER_S = 2.0


class FrontProtocol(asyncio.Protocol):
    """One client connection: requests are answered one at a time, in order (pipelining is queued).

    The client going away cancels the request being answered (its load is released and the
    upstream request closed, as with aiohttp's handler cancellation). A request that cannot be
    parsed or is over a limit is answered with a JSON error after the requests before it, and the
    connection then closes.
    """

    def __init__(self, server: FrontServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self._msg: Message | None = None  # being parsed
        self._queue: deque[Message] = deque()  # parsed, not answered yet
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._busy = False
        self.ending = False  # shutdown began: the answer being written is the connection's last
        self._failed: HTTPError | None = None  # the answer to a request that was refused unparsed
        self._in_head = False  # between a request's first byte and the end of its headers
        self._head_bytes = 0
        self._reading_paused = False
        self.closed = False
        self.write_paused = False
        self.idle_since: float | None = None  # loop time since waiting for the next request

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small SSE chunks must not wait for Nagle; dead peers are noticed
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._server.lean.add(self)
        self.task = self._loop.create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._server.lean.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._wake_drain()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parse_stopped(data, exc)
        if self._in_head:  # a head arriving in pieces is counted, so one that never ends is cut off
            self._count_head(len(data))
        self._wake()

    def _count_head(self, size: int) -> None:
        """Reads that end inside a head: the read it began in is not counted (it may hold the end of
        the request before), later ones are whole head bytes; the read it ends in is not counted."""
        if self._head_bytes < 0:
            self._head_bytes = 0
            return
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, f"request headers are larger than {MAX_HEAD_BYTES} bytes")

    def _parse_stopped(self, data: bytes, exc: Exception) -> None:
        """An upgrade offer is declined (and the rest of `data` read on); a request over a limit
        (a callback raised Refusal) or malformed is refused."""
        if self._failed is not None:
            return  # already refused: the parser stays stopped, what follows is dropped
        for _ in range(_MAX_UPGRADES_PER_READ):
            if not isinstance(exc, httptools.HttpParserUpgrade):
                break
            data = self._decline_upgrade(data[exc.args[0]:])
            if not data:
                return
            try:
                self._parser.feed_data(data)
                return
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as again:
                exc = again
        refusal = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None
        if isinstance(refusal, Refusal):
            self._refuse(refusal.status, refusal.message)
        elif isinstance(exc, httptools.HttpParserCallbackError):
            raise exc  # a bug in a callback, not the client's fault
        elif isinstance(exc, httptools.HttpParserUpgrade):
            if self._queue:
                self._queue.pop()  # the offer not declined: its body was not read, it is refused
            self._refuse(400, "too many protocol upgrade offers")
        else:
            self._refuse(400, f"malformed HTTP request: {exc}")

    def _decline_upgrade(self, rest: bytes) -> bytes:
        """llhttp stopped after the head of a request offering an upgrade (h2c, websocket): answer
        it in HTTP/1.1 instead; a fresh parser reads its head, minus the offer, then the rest.
        CONNECT is refused."""
        msg = self._queue.pop() if self._queue else None  # the offer was its last complete request
        if msg is None or msg.method == b"CONNECT":
            self._refuse(400, "CONNECT is not supported")
            return b""
        self._parser = httptools.HttpRequestParser(self)
        return msg.head_without_upgrade() + rest

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._msg = Message()
        self._in_head = True
        self._head_bytes = -1  # see _count_head

    def on_url(self, url: bytes) -> None:
        msg = self._msg
        assert msg is not None
        msg.url += url
        if len(msg.url) > MAX_FIELD_BYTES:
            raise Refusal(414, f"the request URL is longer than {MAX_FIELD_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        msg = self._msg
        assert msg is not None
        headers = msg.headers
        size = len(name)
        if size + len(value) > MAX_FIELD_BYTES or len(headers) >= MAX_HEADERS:  # trailers count too
            raise Refusal(431, f"request headers are over the limits: {MAX_FIELD_BYTES} bytes a header, "
                               f"{MAX_HEADERS} headers")
        if size == 6 and name.lower() == b"expect":
            msg.expect_continue = value.lower() == b"100-continue"
        elif size == 16 and name.lower() == b"content-encoding":
            msg.encoding = value.decode("latin-1")
        headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        msg = self._msg
        assert msg is not None
        self._in_head = False
        msg.method = self._parser.get_method()
        msg.keep_alive = self._parser.should_keep_alive()
        msg.version = self._parser.get_http_version()
        if msg.expect_continue:
            self._continue(msg)

    def _continue(self, msg: Message) -> None:
        """`Expect: 100-continue`: refuse an announced body over the limit, else invite it."""
        size = msg.content_length()
        if size is not None and size > self._server.max_body:
            raise Refusal(413, f"request body is larger than {self._server.max_body} bytes")
        if not self._busy and not self._queue and self.transport is not None and msg.version != "1.0":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        msg = self._msg
        assert msg is not None
        msg.size += len(body)
        if msg.size > self._server.max_body:
            raise Refusal(413, f"request body is larger than {self._server.max_body} bytes")
        msg.body.append(body)

    def on_message_complete(self) -> None:
        assert self._msg is not None
        self._queue.append(self._msg)
        self._msg = None
        if len(self._queue) > _MAX_PIPELINED and self.transport is not None:
            self._reading_paused = True  # a client pipelining without reading: stop taking more
            self.transport.pause_reading()

    # the connection's request loop
    async def _serve(self) -> None:
        try:
            while (msg := await self._next()) is not None:
                if not msg.is_hot():
                    if self._failed is not None:
                        break  # a refused request follows: aiohttp cannot take the connection over
                    if self._msg is None and msg.version == "1.1" and not msg.has_host():
                        self._refuse(400, "an HTTP/1.1 request needs a Host header")  # else aiohttp's is text
                        self._queue.clear()
                        continue
                    if self._msg is None:  # at a request boundary: aiohttp takes the connection
                        self._hand_over()
                        return
                    await self._wait()  # the next request is half in: hand over once it is whole
                    continue
                self._queue.popleft()
                if self._reading_paused and self._failed is None and len(self._queue) <= _MAX_PIPELINED:
                    self._resume_reading()
                if not await self._answer(msg):
                    break
            else:  # answered all the client sent before the request that was refused, if any
                if self._send_refusal():
                    return
        except asyncio.CancelledError:
            if not self.closed:
                raise
            return  # the client went away
        self.abort()

    async def _next(self) -> Message | None:
        while not self._queue:
            if self.ending or self._failed is not None or self.closed:
                return None
            self.idle_since = self._loop.time()
            await self._wait()
        self.idle_since = None
        return self._queue[0]

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _answer(self, msg: Message) -> bool:
        """Answer `msg`; False when the connection must end with this answer (it said so, it was cut
        short, or shutdown began meanwhile)."""
        sink = LeanSink(self, msg.keep_alive, msg.version != "1.0")
        self._busy = True
        try:
            body = b"".join(msg.body) if msg.encoding is None else msg.decoded_body(self._server.max_body)
            await self._server.hot(msg.path.decode("latin-1"), CIMultiDict(msg.headers), body, sink)
        except HTTPError as exc:
            if not sink.started:
                sink.error(exc)
        except ConnectionResetError:
            pass
        except Exception:
            logger.exception("unexpected error answering %s", msg.path.decode("latin-1"))
            if not sink.started:
                sink.error(HTTPError(500, "internal gateway error"))
        finally:
            self._busy = False
        return msg.keep_alive and sink.complete and not self.ending

    def _hand_over(self) -> None:
        if self.closed or self.transport is None:
            return
        data = b"".join(m.reencode() for m in self._queue)
        self._queue.clear()
        self._server.lean.discard(self)
        if self._reading_paused:
            self._resume_reading()
        handler = self._server.aiohttp_protocol()
        self.transport.set_protocol(handler)
        handler.connection_made(self.transport)
        handler.data_received(data)

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # used by LeanSink and the server
    def date_line(self) -> bytes:
        return self._server.date_line()

    async def drained(self) -> None:
        """Return once the client has taken enough of what was written; ConnectionResetError if it left."""
        while self.write_paused and not self.closed:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter
        if self.closed:
            raise ConnectionResetError("the client closed the connection")

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close_when_idle(self) -> None:
        """Shutdown: close now if idle, else after the response being written."""
        self.ending = True
        self._wake()

    def abort(self) -> None:
        if self.task is not None and not self.task.done() and self.task is not asyncio.current_task():
            self.task.cancel()
        if self.transport is not None:
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """A request that cannot be parsed or is over a limit: stop reading; `_serve` answers it once
        the requests before it are answered, then closes."""
        if self._failed is not None or self.transport is None or self.transport.is_closing():
            return
        self._failed = HTTPError(status, message)
        self._in_head = False
        self.transport.pause_reading()

    def _send_refusal(self) -> bool:
        """Answer the refused request, then close lingering: True when the connection is handled."""
        transport = self.transport
        if self._failed is None or self.ending or transport is None or transport.is_closing():
            return False
        transport.write(error_bytes(self._failed, CLOSE, self.date_line()))
        if not transport.can_write_eof():
            return False
        # Closing with unread input makes the kernel reset the connection, which can destroy the
        # answer before the client reads it: send EOF, then read and drop for a moment first.
        self.closed = True
        self._server.lean.discard(self)
        transport.write_eof()
        transport.set_protocol(_Discard(transport, self._loop.call_later(_LINGER_S, transport.close)))
        transport.resume_reading()
        return True


class _Discard(asyncio.Protocol):
    """A refused connection's last moments: what the client still sends is dropped (see above)."""

    def __init__(self, transport: asyncio.Transport, timer: asyncio.TimerHandle) -> None:
        self._transport = transport
        self._timer = timer

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the client closed its side too: the transport closes now

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()
