"""`GatewayServer`: the gateway's one HTTP server — listening socket, connections, shared limits, routing.

Every connection is a `FrontProtocol` (front.py); every request is matched in the route table
(routes.py), its access checked (access.py) and its handler called with the `Gateway`. The
server holds what connections share: the connection cap, the budget of buffered request bytes,
one timer that enforces every connection's read deadline, and graceful shutdown.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from dpserve.gateway.config import ClientLimits
from dpserve.gateway.front import FrontProtocol
from dpserve.gateway.front_response import LeanSink, date_line
from dpserve.gateway.routes import Request, RouteTable

if TYPE_CHECKING:
    from dpserve.gateway.access import AccessPolicy
    from dpserve.gateway.app import Gateway
    from dpserve.gateway.front_request import Message

_METHODS = {m.encode(): m for m in ("GET", "POST", "HEAD", "DELETE", "PUT", "OPTIONS", "PATCH")}
# Deadlines are checked every quarter of the shortest one, within these bounds.
_MIN_SWEEP_S = 0.05
_MAX_SWEEP_S = 1.0


@dataclass
class ByteBudget:
    """Bytes held by all connections together, below `limit`: `take` is all or nothing."""

    limit: int
    held: int = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


@dataclass
class GatewayServer:
    """`await start(sock)` starts the gateway, then serves `sock`; `await stop(grace_s)` stops
    accepting, closes idle connections, gives in-flight requests `grace_s`, then stops the gateway."""

    gateway: Gateway
    access: AccessPolicy
    limits: ClientLimits
    routes: RouteTable = field(default_factory=RouteTable)
    connections: set[FrontProtocol] = field(default_factory=set)
    listening: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.budget = ByteBudget(self.limits.max_buffered_request_bytes)
        limits = self.limits
        shortest = min(limits.header_timeout_s, limits.body_timeout_s, limits.keepalive_timeout_s)
        self._sweep_s = max(_MIN_SWEEP_S, min(_MAX_SWEEP_S, shortest / 4))
        self._sweep: asyncio.TimerHandle | None = None
        # Loop time as of the last sweep: connections set deadlines from it (reading the loop's
        # clock three times per request costs ~0.5 µs), one sweep period later than exact.
        self.now = 0.0
        self._listener: asyncio.AbstractServer | None = None
        self._date_second = -1
        self._date_line = b""

    async def start(self, sock: socket.socket) -> None:
        self.listening = [tuple(sock.getsockname()[:2])]
        try:
            await self.gateway.start(self.listening)
        except BaseException:
            await self.gateway.stop()
            raise
        self._listener = await asyncio.get_running_loop().create_server(self, sock=sock, backlog=2048)

    async def stop(self, grace_s: float) -> None:
        if self._listener is not None:
            self._listener.close()
        conns = list(self.connections)
        for conn in conns:  # idle ones end now, busy ones after the answer being written
            conn.close_when_idle()
        tasks = [c.task for c in conns if c.task is not None and not c.task.done()]
        try:
            if tasks:
                await asyncio.wait(tasks, timeout=grace_s)  # a second Ctrl-C cancels this drain...
        finally:  # ...and everything else still stops
            for conn in conns:
                conn.abort()
            if self._sweep is not None:
                self._sweep.cancel()
            await self.gateway.stop()

    # for FrontProtocol
    def __call__(self) -> FrontProtocol:
        return FrontProtocol(self)

    def accept(self, conn: FrontProtocol) -> bool:
        """Count a new connection; False when the gateway holds --max-connections already."""
        if len(self.connections) >= self.limits.max_connections:
            return False
        self.connections.add(conn)
        if self._sweep is None:
            loop = asyncio.get_running_loop()
            self.now = loop.time() + self._sweep_s
            self._sweep = loop.call_later(self._sweep_s, self._expire_overdue)
        return True

    def forget(self, conn: FrontProtocol) -> None:
        self.connections.discard(conn)

    async def respond(self, msg: Message, body: bytes, sink: LeanSink, from_loopback: bool) -> None:
        """Route one request: 404/405, access (401/403), then its handler."""
        url = msg.url.decode("latin-1")
        path, _, query = url.partition("?") if "?" in url else (url, "", "")
        method = _METHODS.get(msg.method) or msg.method.decode("latin-1")
        route, params = self.routes.match(method, path)
        headers = CIMultiDict(msg.headers)
        self.access.check(route.access, headers, from_loopback)
        await route.handler(self.gateway, Request(method, path, query, headers, body, from_loopback, params),
                            sink)

    def date_line(self) -> bytes:
        """`Date:` for responses, formatted at most once per second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second, self._date_line = now, date_line(now)
        return self._date_line

    def _expire_overdue(self) -> None:
        """One timer for every connection's deadline (a timer per request would cost every request)."""
        now = asyncio.get_running_loop().time()
        self.now = now + self._sweep_s  # never earlier than exact: a deadline may come a sweep late
        for conn in list(self.connections):
            if conn.deadline is not None and conn.deadline < now and not conn.reading_paused:
                conn.expire()
        self._sweep = (asyncio.get_running_loop().call_later(self._sweep_s, self._expire_overdue)
                       if self.connections else None)
