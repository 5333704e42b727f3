"""BackgroundTasks, cancel_and_wait and wait_for: tasks end on cancel, and no cancel is lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import pytest

from dpserve import aio
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


class _SwallowsOneCancel:
    """A loop whose library call hands back a reply instead of raising the cancellation (as
    Python 3.11's asyncio.wait_for does inside redis-py)."""

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


@pytest.fixture
def quick_recancel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aio, "RECANCEL_AFTER_S", 0.05)


async def _done_within(aw: Coroutine[Any, Any, None], seconds: float) -> asyncio.Task[None]:
    waiter = asyncio.create_task(aw)
    await asyncio.wait({waiter}, timeout=seconds)  # no cancel of its own on time-out, unlike wait_for
    return waiter


@pytest.mark.usefixtures("quick_recancel")
async def test_cancel_and_wait_ends_a_task_that_swallowed_its_cancellation(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = _SwallowsOneCancel()
    task = asyncio.create_task(loop.run(), name="swallower")
    await loop.started.wait()
    waiter = await _done_within(aio.cancel_and_wait(task), 5)
    assert waiter.done() and task.cancelled() and loop.turns == 2
    assert "'swallower' still runs" in caplog.text  # said, not silent


@pytest.mark.usefixtures("quick_recancel")
async def test_cancel_all_ends_a_task_that_swallowed_its_cancellation() -> None:
    loop = _SwallowsOneCancel()
    tasks = BackgroundTasks()
    tasks.spawn(loop.run())
    await loop.started.wait()
    waiter = await _done_within(tasks.cancel_all(), 5)
    assert waiter.done() and loop.turns == 2


async def test_a_cancelled_waiter_cancels_the_task_once_more_and_keeps_its_own_cancellation() -> None:
    loop = _SwallowsOneCancel()
    task = asyncio.create_task(loop.run())
    await loop.started.wait()
    caller = asyncio.create_task(aio.cancel_and_wait(task))
    await asyncio.sleep(0.01)  # the first cancel swallowed; the waiter waits
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled() and loop.turns == 2


async def test_cancel_and_wait_raises_the_tasks_own_error() -> None:
    async def fails() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await aio.cancel_and_wait(task)


async def test_cancel_and_wait_leaves_a_cancelled_task_its_clean_up() -> None:
    cleaned: list[bool] = []

    async def slow_clean_up() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.3)  # shorter than RECANCEL_AFTER_S: not cut short
            cleaned.append(True)

    task = asyncio.create_task(slow_clean_up())
    await asyncio.sleep(0)
    await aio.cancel_and_wait(task)
    assert cleaned == [True]


async def test_wait_for_keeps_a_cancel_that_comes_as_the_awaited_result_arrives() -> None:
    """python/cpython#86296: 3.11's asyncio.wait_for returns the result and drops the cancel."""
    result: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def waits() -> str:
        await aio.wait_for(result, 10)
        return "went on as if not cancelled"

    task = asyncio.create_task(waits())
    await asyncio.sleep(0)
    result.set_result(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_wait_for_times_out_with_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        await aio.wait_for(asyncio.sleep(3600), 0.01)
    assert await aio.wait_for(asyncio.sleep(0, "ok"), None) == "ok"


async def test_finish_all_runs_every_step_after_a_failure_or_a_cancel(
        caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []
    gate = asyncio.Event()

    async def waits() -> None:
        ran.append("waits")
        await gate.wait()  # cancelled here, like a stop interrupted by a second Ctrl-C

    async def fails() -> None:
        ran.append("fails")
        raise RuntimeError("one part could not stop")

    async def last() -> None:
        await asyncio.sleep(0)
        ran.append("last")

    stopping = asyncio.create_task(aio.finish_all([fails, waits, lambda: ran.append("sync"), last]))
    await asyncio.sleep(0.01)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):  # the cancel wins over the earlier error...
        await stopping
    assert ran == ["fails", "waits", "sync", "last"]
    assert "could not stop" in caplog.text  # ...which is logged, not lost

    with pytest.raises(RuntimeError, match="could not stop"):  # no cancel: the first error
        await aio.finish_all([fails, last])


async def test_cancel_all_also_ends_tasks_spawned_while_it_cancels() -> None:
    tasks = BackgroundTasks()
    ended: list[str] = []

    async def late() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append("late")

    async def spawns_on_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            tasks.spawn(late())  # e.g. a health flip's prewarm while the gateway stops
            await asyncio.sleep(0.01)  # the late one starts

    tasks.spawn(spawns_on_cancel())
    await asyncio.sleep(0)
    await tasks.cancel_all()
    assert ended == ["late"] and len(tasks) == 0  # cancelled and waited for, not left running


async def test_cancel_kept_raises_a_cancel_the_call_lost_and_passes_everything_else() -> None:
    async def loses_the_cancel() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # as 3.11's wait_for: counted, not raised
            await asyncio.sleep(3600)
        return "a reply"

    async def calls() -> str:
        with aio.cancel_kept():
            return await loses_the_cancel()

    task = asyncio.create_task(calls())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def plain(value: str) -> str:
        with aio.cancel_kept():
            await asyncio.sleep(0)
            return value

    assert await plain("ok") == "ok"
    with pytest.raises(KeyError), aio.cancel_kept():
        raise KeyError("not a cancel")


async def test_wait_for_before_3_11_3_is_asyncios(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aio, "_TIMEOUT_TELLS_ITS_OWN_CANCEL", False)
    with pytest.raises(TimeoutError):
        await aio.wait_for(asyncio.sleep(3600), 0.01)
    assert await aio.wait_for(asyncio.sleep(0, "ok"), 1) == "ok"
