"""Small asyncio helpers shared by the background loops (health checks, pollers, watchers)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

# A task that swallowed its cancellation is cancelled again this often. redis-py's async client
# can hand a command's reply to a task cancelled mid-command instead of raising (redis/redis-py#2028:
# 70 of 300 cancels of a quota store's heartbeat loop here), and a loop then runs on forever.
RECANCEL_INTERVAL_S = 0.05


async def _cancel_until_done(task: asyncio.Task[Any]) -> None:
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_INTERVAL_S)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if any) until it has finished, swallowing its cancellation (not its error).

    The caller's own cancellation is not swallowed."""
    if task is None:
        return
    await _cancel_until_done(task)
    if not task.cancelled():
        task.result()


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
        tasks = list(self._tasks)
        await asyncio.gather(*(_cancel_until_done(task) for task in tasks))
        for task in tasks:  # their errors swallowed, as in wait_all: nobody awaits them
            if not task.cancelled():
                task.exception()

    async def wait_all(self) -> None:
        """Let every task finish (their exceptions are swallowed: nobody awaits them)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
