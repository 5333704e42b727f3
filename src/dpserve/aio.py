"""Small asyncio helpers shared by the background loops (health checks, pollers, watchers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if any) and wait until it has finished, swallowing its cancellation."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class BackgroundTasks:
    """Tasks started from synchronous callbacks and not awaited by their starter. Holding them here
    keeps them from being garbage-collected mid-flight; `cancel_all` / `wait_all` end them on stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.wait_all()

    async def wait_all(self) -> None:
        """Let every task finish (their exceptions are swallowed: nobody awaits them)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
