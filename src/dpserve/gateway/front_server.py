"""`FrontServer`: aiohttp's `Server` whose connections start on the lean front (front.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from dpserve.gateway.front import FrontProtocol
from dpserve.gateway.front_response import LeanSink, date_line

HotHandler = Callable[[str, Mapping[str, str], bytes, LeanSink], Awaitable[None]]
# aiohttp's RequestHandler default, used when the runner does not set `keepalive_timeout`.
_KEEPALIVE_TIMEOUT_S = 3630.0


class FrontServer(web.Server):
    """aiohttp's `Server` whose connections start on `FrontProtocol`; graceful shutdown covers both."""

    def __init__(self, inner: web.Server, hot: HotHandler, max_body: int) -> None:
        # Same handler, factory and per-connection options as the server aiohttp built (`inner`).
        super().__init__(inner.request_handler, request_factory=inner.request_factory,
                         handler_cancellation=inner.handler_cancellation, loop=inner._loop, **inner._kwargs)
        self.hot = hot
        self.max_body = max_body
        self.lean: set[FrontProtocol] = set()
        self.keepalive_timeout_s = float(inner._kwargs.get("keepalive_timeout", _KEEPALIVE_TIMEOUT_S))
        self._sweep: asyncio.TimerHandle | None = None
        self._date_second = -1
        self._date_line = b""

    def __call__(self) -> FrontProtocol:  # type: ignore[override]
        if self._sweep is None and self.keepalive_timeout_s > 0:
            self._schedule_sweep()
        return FrontProtocol(self)

    def _schedule_sweep(self) -> None:
        # One timer for all lean connections, not one per idle period (that would cost every request).
        self._sweep = self._loop.call_later(min(60.0, self.keepalive_timeout_s / 2), self._close_idle)

    def _close_idle(self) -> None:
        """Close lean connections idle (between requests) for longer than the keep-alive timeout."""
        cutoff = self._loop.time() - self.keepalive_timeout_s
        for conn in list(self.lean):
            if conn.idle_since is not None and conn.idle_since < cutoff:
                conn.abort()
        self._sweep = None
        if self.lean:
            self._schedule_sweep()

    def date_line(self) -> bytes:
        """`Date:` for responses, formatted at most once per second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second, self._date_line = now, date_line(now)
        return self._date_line

    def aiohttp_protocol(self) -> asyncio.Protocol:
        return super().__call__()

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for conn in list(self.lean):
            conn.close_when_idle()

    async def shutdown(self, timeout: float | None = None) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        await asyncio.gather(super().shutdown(timeout), self._shutdown_lean(timeout))

    async def _shutdown_lean(self, timeout: float | None) -> None:
        """In-flight requests get `timeout` to finish; then they are cancelled and closed."""
        conns = list(self.lean)
        for conn in conns:  # idle ones end now (pre_shutdown normally did this already)
            conn.close_when_idle()
        tasks = [c.task for c in conns if c.task is not None and not c.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for conn in conns:
            conn.abort()
