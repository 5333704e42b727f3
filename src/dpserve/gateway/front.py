"""The gateway's HTTP/1.1 front: an asyncio protocol with httptools, for every route.

Why not aiohttp's server: its request parsing, `web.Request`, routing, middlewares and response
objects measured 33–50 µs of CPU per request on this project's VM for a trivial handler, against
14–17 µs for a bare protocol doing the same work with httptools (benchmarks.md, gateway section);
the gateway pays it on every proxied request. Routes come from one table (routes.py), matched by
the server (server.py), which also holds the limits every connection shares. Reading requests
(httptools callbacks, limits, upgrade offers) is front_reading.py; answers are front_response.py.

Hostile or odd clients: size limits (front_request.py, `--max-request-bytes`, an announced
Content-Length over it refused before the body is read), read deadlines for headers and bodies,
a budget of buffered request bytes shared by all connections, and HTTP/1.1 rules (Host exactly
once, versions 1.0 and 1.1 only); bad requests get JSON errors in order, then a lingering close.
Upgrade offers are answered in HTTP/1.1; a client pipelining without reading its answers is no
longer read from; gzip/deflate bodies are inflated. A client that half-closes after its requests
gets its answers; one that is really gone is noticed by a probe (see `_probe_client`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import TYPE_CHECKING

import httptools

from dpserve.errors import HTTPError
from dpserve.gateway.access import is_loopback_peer
from dpserve.gateway.front_reading import MAX_PIPELINED, RequestReading
from dpserve.gateway.front_request import Message
from dpserve.gateway.front_response import CLOSE, LeanSink, error_bytes, linger_close

if TYPE_CHECKING:
    from dpserve.gateway.server import GatewayServer

logger = logging.getLogger(__name__)

# After a half-close, how often an unanswered client is probed (see _probe_client).
_PROBE_INTERVAL_S = 0.25
_PROBE = b"HTTP/1.1 100 Continue\r\n\r\n"


class FrontProtocol(RequestReading, asyncio.Protocol):
    """One client connection: requests are answered one at a time, in order (pipelining is queued).

    The client going away cancels the request being answered (its load is released and the
    upstream request closed). A request that cannot be parsed, is over a limit or too slow to
    arrive is answered with a JSON error after the requests before it, and the connection closes.
    `deadline` is the loop time by which the client must have sent what is pending (the server's
    sweep enforces it, within one sweep period): the rest of the head, the rest of the body, or a
    next request.
    """

    def __init__(self, server: GatewayServer) -> None:
        self._server = server
        self._limits = limits = server.limits
        self._header_timeout_s = limits.header_timeout_s
        self._body_timeout_s = limits.body_timeout_s
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self._msg: Message | None = None  # being parsed
        self._queue: deque[Message] = deque()  # parsed, not answered yet
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._sink: LeanSink | None = None  # the answer being given
        self._probe: asyncio.TimerHandle | None = None
        self.ending = False  # shutdown began: the answer being written is the connection's last
        self._eof = False  # the client half-closed: it sends nothing more
        self._failed: HTTPError | None = None  # the answer to a request that was refused unparsed
        self._in_head = False  # between a request's first byte and the end of its headers
        self._head_bytes = 0
        self.reading_paused = False
        self.closed = False
        self.write_paused = False
        self.from_loopback = False
        self.deadline: float | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small SSE chunks must not wait for Nagle; dead peers are noticed
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.from_loopback = is_loopback_peer(transport.get_extra_info("peername"))
        if not self._server.accept(self):  # answered at once, without reading a request
            self._refuse(HTTPError(503, f"the gateway holds {self._limits.max_connections} connections "
                                        "(--max-connections); try again", headers={"Retry-After": "1"}))
        self.task = self._loop.create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._server.forget(self)
        self._cancel_probe()
        self._drop_partial()
        while self._queue:
            self._release(self._queue.popleft())
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
        elif self._msg is None and not self._busy_or_queued():
            self._stray_bytes()
        self._wake()

    def _stray_bytes(self) -> None:
        """Bytes that began no request on an idle connection (llhttp skips empty lines before a
        request line): the header deadline runs from the first of them, so a client sending "\r\n"
        every second cannot hold a connection (and a --max-connections slot) forever."""
        header_deadline = self._server.now + self._header_timeout_s
        if self.deadline is None or header_deadline < self.deadline:
            self.deadline = header_deadline

    def eof_received(self) -> bool:
        """The client half-closed (or closed): answer the requests it completed, then close."""
        self._eof = True
        self._drop_partial()  # a request cut short can never complete
        if self._sink is not None and not self._sink.started:
            self._probe_client()
        self._wake()
        return True  # keep the transport open: the answers still go out

    def _probe_client(self) -> None:
        """Half-closed, or gone? Only a write tells: a client that closed fully answers it with a
        reset, and the next write fails (the handler is then cancelled, and the replica stops). An
        extra `100 Continue` is the one thing HTTP/1.1 lets a server send before its answer (RFC
        9110 15.2: clients must accept unexpected 1xx). HTTP/1.0 clients cannot be probed."""
        self._probe = None
        sink = self._sink
        transport = self.transport
        if (sink is None or sink.started or not sink.chunked or self.closed or transport is None
                or transport.is_closing()):
            return
        transport.write(_PROBE)
        self._probe = self._loop.call_later(_PROBE_INTERVAL_S, self._probe_client)

    def _cancel_probe(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    # the connection's request loop
    async def _serve(self) -> None:
        try:
            while (msg := await self._next()) is not None:
                self._queue.popleft()
                if self.reading_paused and self._failed is None and len(self._queue) <= MAX_PIPELINED:
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
        if not self._queue and self._msg is None:  # idle from now: set once, so no wake-up extends it
            self.deadline = self._server.now + self._limits.keepalive_timeout_s
        while not self._queue:
            if self.ending or self._failed is not None or self.closed or self._eof:
                return None
            await self._wait()
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

    def _busy_or_queued(self) -> bool:
        return self._sink is not None or bool(self._queue)

    async def _answer(self, msg: Message) -> bool:
        """Answer `msg`; False when the connection must end with this answer (it said so, it was cut
        short, or shutdown began meanwhile)."""
        sink = LeanSink(self, msg.keep_alive, msg.version != "1.0", msg.method == b"HEAD")
        self._sink = sink
        if self._eof:
            self._probe_client()
        try:
            body = b"".join(msg.body) if msg.encoding is None else self._decoded(msg)
            msg.body = []  # the joined copy is the only one from here on
            await self._server.respond(msg, body, sink, self.from_loopback)
        except HTTPError as exc:
            if not sink.started:
                sink.error(exc)
        except ConnectionResetError:
            pass
        except Exception:
            logger.exception("unexpected error answering %s %s", msg.method.decode("latin-1"),
                             msg.path.decode("latin-1"))
            if not sink.started:
                sink.error(HTTPError(500, "internal gateway error"))
        finally:
            self._sink = None
            if self._probe is not None:
                self._cancel_probe()
            if msg.reserved:
                self._release(msg)
        return msg.keep_alive and sink.complete and not self.ending

    def _decoded(self, msg: Message) -> bytes:
        body = msg.decoded_body(self._limits.max_request_bytes)
        if len(body) > msg.reserved and not self._server.budget.take(len(body) - msg.reserved):
            raise HTTPError(503, "the gateway is holding as many request bytes as it may "
                                 "(--max-buffered-request-bytes); try again", headers={"Retry-After": "1"})
        msg.reserved = max(msg.reserved, len(body))
        return body

    def _resume_reading(self) -> None:
        self.reading_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        if self._msg is not None:  # its deadline did not run while we were not reading
            timeout = self._header_timeout_s if self._in_head else self._body_timeout_s
            self.deadline = self._server.now + timeout

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

    def expire(self) -> None:
        """`deadline` passed: an idle connection is closed, a request too slow to arrive refused (408)."""
        self.deadline = None
        if self._msg is None:
            if not self._busy_or_queued():
                self.abort()
            return
        part, limit = (("headers", self._limits.header_timeout_s) if self._in_head
                       else ("body", self._limits.body_timeout_s))
        self._drop_partial()
        self._refuse(HTTPError(408, f"the request {part} did not arrive within {limit:g} s"))
        self._wake()

    def abort(self) -> None:
        if self.task is not None and not self.task.done() and self.task is not asyncio.current_task():
            self.task.cancel()
        if self.transport is not None:
            self.transport.close()

    def _refuse(self, error: HTTPError) -> None:
        """A request that cannot be parsed, is over a limit or too slow: stop reading; `_serve`
        answers it once the requests before it are answered, then closes."""
        if self._failed is not None or self.transport is None or self.transport.is_closing():
            return
        self._failed = error
        self._in_head = False
        self.deadline = None
        self.transport.pause_reading()

    def _send_refusal(self) -> bool:
        """Answer the refused request, then close lingering: True when the connection is handled."""
        transport = self.transport
        if self._failed is None or self.ending or transport is None or transport.is_closing():
            return False
        self.closed = True
        self._server.forget(self)
        self._drop_partial()
        return linger_close(transport, error_bytes(self._failed, CLOSE, self.date_line()))
