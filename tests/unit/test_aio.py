"""BackgroundTasks and cancel_and_wait: tasks end on cancel, even those that swallow one."""

from __future__ import annotations

import asyncio

import pytest

from dpserve.aio import BackgroundTasks, cancel_and_wait


async def test_wait_all_lets_tasks_finish_and_swallows_their_errors() -> None:
    done: list[int] = []
    tasks = BackgroundTasks()

    async def work(i: int) -> None:
        await asyncio.sleep(0.01)
        if i == 1:
            raise RuntimeError("nobody awaits this")
        done.append(i)

    for i in range(3):
        tasks.spawn(work(i))
    await tasks.wait_all()
    assert sorted(done) == [0, 2]


async def test_cancel_all_cancels_what_is_still_running() -> None:
    started = asyncio.Event()
    finished: list[bool] = []
    tasks = BackgroundTasks()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)
        finished.append(True)

    tasks.spawn(forever())
    await started.wait()
    await tasks.cancel_all()
    assert finished == []
    await tasks.wait_all()  # nothing left to wait for


class _SwallowsOneCancel:
    """A loop whose library call hands back a reply instead of raising the cancellation (redis-py)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.turns = 0

    async def run(self) -> None:
        while True:
            self.started.set()
            self.turns += 1
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.turns == 1:
                    asyncio.current_task().uncancel()  # swallowed, once
                    continue
                raise


async def test_cancel_and_wait_ends_a_task_that_swallowed_its_cancellation() -> None:
    loop = _SwallowsOneCancel()
    task = asyncio.create_task(loop.run())
    await loop.started.wait()
    waiter = asyncio.create_task(cancel_and_wait(task))
    await asyncio.wait({waiter}, timeout=5)  # no cancel of its own on time-out, unlike wait_for
    assert waiter.done() and task.cancelled() and loop.turns == 2


async def test_cancel_all_ends_a_task_that_swallowed_its_cancellation() -> None:
    loop = _SwallowsOneCancel()
    tasks = BackgroundTasks()
    tasks.spawn(loop.run())
    await loop.started.wait()
    waiter = asyncio.create_task(tasks.cancel_all())
    await asyncio.wait({waiter}, timeout=5)
    assert waiter.done() and loop.turns == 2


async def test_cancel_and_wait_raises_the_tasks_own_error_and_keeps_the_callers_cancellation() -> None:
    async def fails() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(task)

    async def ignores_cancels_for(seconds: float) -> None:
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()

    stubborn = asyncio.create_task(ignores_cancels_for(0.3))
    caller = asyncio.create_task(cancel_and_wait(stubborn))
    await asyncio.sleep(0.1)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await stubborn
