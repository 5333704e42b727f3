"""Reading requests on a front connection (front.py): httptools callbacks, the limits on each
request's head and body, the budget of held body bytes, and declining upgrade offers.

`RequestReading` is the parsing half of `FrontProtocol`; it fills the connection's queue of
complete requests and refuses (through `_refuse`) what breaks a limit or the HTTP/1.1 rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

import httptools

from dpserve.errors import HTTPError
from dpserve.gateway.front_request import MAX_FIELD_BYTES, MAX_HEAD_BYTES, MAX_HEADERS, Message, Refusal

if TYPE_CHECKING:
    from dpserve.gateway.config import ClientLimits
    from dpserve.gateway.server import GatewayServer

logger = logging.getLogger(__name__)

# Parsed requests a connection may hold unanswered before the front stops reading from it.
MAX_PIPELINED = 16
# Upgrade offers declined within one read (each re-reads the rest of that read).
_MAX_UPGRADES_PER_READ = 8


class RequestReading:
    """The connection state this half uses is set up by FrontProtocol.__init__."""

    _server: GatewayServer
    _limits: ClientLimits
    _parser: httptools.HttpRequestParser
    _msg: Message | None
    _queue: deque[Message]
    _failed: HTTPError | None
    _in_head: bool
    _head_bytes: int
    _header_timeout_s: float
    _body_timeout_s: float
    transport: asyncio.Transport | None
    reading_paused: bool
    deadline: float | None

    def _refuse(self, error: HTTPError) -> None:
        raise NotImplementedError

    def _busy_or_queued(self) -> bool:
        raise NotImplementedError

    def _count_head(self, size: int) -> None:
        """Reads that end inside a head: the read it began in is not counted (it may hold the end of
        the request before), later ones are whole head bytes; the read it ends in is not counted."""
        if self._head_bytes < 0:
            self._head_bytes = 0
            return
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(HTTPError(431, f"request headers are larger than {MAX_HEAD_BYTES} bytes"))

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
            self._refuse(refusal.error)
        elif isinstance(exc, httptools.HttpParserCallbackError):  # a bug here, not the client's fault
            logger.error("unexpected error reading a request", exc_info=exc.__context__ or exc)
            self._refuse(HTTPError(500, "internal gateway error"))
        elif isinstance(exc, httptools.HttpParserUpgrade):
            if self._queue:
                self._release(self._queue.pop())  # the offer not declined: its body was not read
            self._refuse(HTTPError(400, "too many protocol upgrade offers"))
        else:
            self._refuse(HTTPError(400, f"malformed HTTP request: {exc}"))

    def _decline_upgrade(self, rest: bytes) -> bytes:
        """llhttp stopped after the head of a request offering an upgrade (h2c, websocket): answer
        it in HTTP/1.1 instead; a fresh parser reads its head, minus the offer, then the rest.
        CONNECT is refused."""
        msg = self._queue.pop() if self._queue else None  # the offer was its last complete request
        if msg is None or msg.method == b"CONNECT":
            self._refuse(HTTPError(400, "CONNECT is not supported"))
            return b""
        self._release(msg)  # read again below, and counted again
        self._parser = httptools.HttpRequestParser(self)
        return msg.head_without_upgrade() + rest

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._msg = Message()
        self._in_head = True
        self._head_bytes = -1  # see _count_head
        self.deadline = self._server.now + self._header_timeout_s

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
        if size == 4 and name.lower() == b"host":
            msg.hosts += 1
        elif size == 14 and name.lower() == b"content-length":
            msg.length = value.decode("latin-1")
        elif size == 6 and name.lower() == b"expect":
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
        msg.version = version = self._parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise Refusal(505, f"HTTP/{version} is not supported: send HTTP/1.1")
        if msg.hosts != 1 and (msg.hosts > 1 or version == "1.1"):
            raise Refusal(400, "an HTTP/1.1 request needs exactly one Host header (RFC 9112 3.2)")
        self.deadline = self._server.now + self._body_timeout_s
        if msg.length is not None and msg.length != "0":
            self._reserve(msg, int(msg.length))  # llhttp accepts digits only
        if msg.expect_continue and not self._busy_or_queued() and version == "1.1":
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        msg = self._msg
        assert msg is not None
        msg.size += len(body)
        if msg.size > msg.reserved:  # chunked (no Content-Length): counted as it arrives
            self._reserve(msg, msg.size)
        msg.body.append(body)

    def on_message_complete(self) -> None:
        assert self._msg is not None
        self._queue.append(self._msg)
        self._msg = None
        self.deadline = None
        if len(self._queue) > MAX_PIPELINED and self.transport is not None:
            self.reading_paused = True  # a client pipelining without reading: stop taking more
            self.transport.pause_reading()

    def _reserve(self, msg: Message, size: int) -> None:
        """Count `size` bytes of `msg`'s body (in total) against the limits, before holding them."""
        limit = self._limits.max_request_bytes
        if size > limit:
            raise Refusal(413, f"request body is larger than {limit} bytes (--max-request-bytes)")
        if not self._server.budget.take(size - msg.reserved):
            raise Refusal(503, "the gateway is holding as many request bytes as it may "
                               "(--max-buffered-request-bytes); try again", {"Retry-After": "1"})
        msg.reserved = size

    def _release(self, msg: Message) -> None:
        self._server.budget.give(msg.reserved)
        msg.reserved = 0

    def _drop_partial(self) -> None:
        if self._msg is not None:
            self._release(self._msg)
            self._msg = None
            self._in_head = False
