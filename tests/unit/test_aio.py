"""BackgroundTasks: spawned tasks are held until done, then wait_all / cancel_all end them."""

from __future__ import annotations

import asyncio

from dpserve.aio import BackgroundTasks


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
