"""Small asyncio helpers shared by the background loops (health checks, pollers, watchers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Python 3.11's asyncio.wait_for can hand the inner result to a task cancelled just as the inner
# awaitable finished, losing the cancellation (python/cpython#86296, fixed in 3.12): a loop so
# cancelled runs on, and whoever waits for it hangs. `wait_for` below is the 3.12 form; libraries
# still use the old one (redis-py around its socket I/O: 16 of 30 quota-store stops hung here), so
# calls into them are made inside `cancel_kept()`, and `cancel_and_wait` cancels again as a last
# resort, late enough to leave a cancelled task's own clean-up its time.
RECANCEL_AFTER_S = 2.0


# asyncio.timeout before 3.11.3 took an earlier cancel of the task for its own and raised
# CancelledError instead of TimeoutError (python/cpython#102780): in a clean-up after a cancel, the
# `except TimeoutError:` fall-backs (SIGKILL after the grace period) would be skipped there.
_TIMEOUT_TELLS_ITS_OWN_CANCEL = sys.version_info >= (3, 11, 3)


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """`asyncio.wait_for` that never loses a cancellation (raises TimeoutError on time-out)."""
    if not _TIMEOUT_TELLS_ITS_OWN_CANCEL:
        return await asyncio.wait_for(aw, timeout)
    async with asyncio.timeout(timeout):
        return await aw


@contextlib.contextmanager
def cancel_kept() -> Iterator[None]:
    """Around an await into a library that may lose this task's cancellation (3.11's
    asyncio.wait_for inside it): raises CancelledError after it if the task was cancelled during
    it, whatever the call returned or raised."""
    task = asyncio.current_task()
    before = 0 if task is None else task.cancelling()
    try:
        yield
    except Exception:
        if task is not None and task.cancelling() > before:
            raise asyncio.CancelledError from None
        raise
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError


async def _cancel_until_done(task: asyncio.Task[Any]) -> None:
    task.cancel()
    try:
        while not (await asyncio.wait({task}, timeout=RECANCEL_AFTER_S))[0]:
            logger.warning("task %r still runs %.0f s after it was cancelled; cancelling it again",
                           task.get_name(), RECANCEL_AFTER_S)
            task.cancel()
    except asyncio.CancelledError:
        task.cancel()  # the waiter is cancelled itself: one more for a task that may have lost one
        raise


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if any) and wait until it has finished, swallowing its cancellation (not its
    error). The caller's own cancellation is not swallowed."""
    if task is None:
        return
    await _cancel_until_done(task)
    if not task.cancelled():
        task.result()


async def finish_all(steps: Iterable[Callable[[], Awaitable[None] | None]]) -> None:
    """Run every clean-up step in order, even after one raised or this task was cancelled (a second
    Ctrl-C), so a stop leaves no Redis client, socket or process behind because an earlier step
    failed. Then a cancellation is raised if there was one, else the first error; the other errors
    are logged."""
    errors: list[BaseException] = []
    for step in steps:
        try:
            pending = step()
            if pending is not None:
                await pending
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # raised or logged after the other steps
            errors.append(exc)
    if not errors:
        return
    raised = next((e for e in errors if isinstance(e, asyncio.CancelledError)), errors[0])
    for other in errors:
        if other is not raised and not isinstance(other, asyncio.CancelledError):
            logger.error("a stop step failed as well", exc_info=other)
    raise raised


class BackgroundTasks:
    """Tasks started from synchronous callbacks and not awaited by their starter. Holding them here
    keeps them from being garbage-collected mid-flight; `cancel_all` / `wait_all` end them on stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self) -> None:
        while self._tasks:  # also those spawned while the first ones were being cancelled
            tasks = list(self._tasks)
            await asyncio.gather(*(_cancel_until_done(task) for task in tasks))
            for task in tasks:  # their errors swallowed, as in wait_all: nobody awaits them
                if not task.cancelled():
                    task.exception()
            self._tasks.difference_update(tasks)  # done, their discard callbacks maybe not yet run

    async def wait_all(self) -> None:
        """Let every task finish (their exceptions are swallowed: nobody awaits them)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
