"""Cancels handlers whose client has gone away, even while their request is still queued.

Generation notices a closed connection after each engine delta, but a request waiting in the
engine's queue produces no delta. One background loop per app polls the transports of in-flight
completion handlers and cancels those whose connection closed; the cancellation closes the
engine iterator, which aborts the request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import web

from dpserve.aio import cancel_and_wait

DEFAULT_INTERVAL_S = 0.5


class DisconnectWatcher:
    """Background loop with `start()` / `stop()`; handlers enter `watch(request)` while running."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._watched: dict[asyncio.Task[object], web.Request] = {}
        self._loop_task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, request: web.Request) -> Iterator[None]:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - handlers always run in a task
            yield
            return
        self._watched[task] = request
        try:
            yield
        finally:
            self._watched.pop(task, None)

    def cancel_disconnected(self) -> int:
        """One sweep: cancel handlers whose transport is gone; returns how many."""
        cancelled = 0
        for task, request in list(self._watched.items()):
            transport = request.transport
            if (transport is None or transport.is_closing()) and not task.done():
                task.cancel()
                self._watched.pop(task, None)
                cancelled += 1
        return cancelled

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="disconnect-watcher")

    async def stop(self) -> None:
        await cancel_and_wait(self._loop_task)
        self._loop_task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.cancel_disconnected()
