"""DeadlineSweeper: overdue items expire once, cleared or later ones do not, the timer stops when idle."""

from __future__ import annotations

import asyncio

from dpserve.gateway.deadline_sweeper import DeadlineSweeper


class _Waiter:
    def __init__(self) -> None:
        self.expired = asyncio.Event()
        self.calls = 0

    def expire(self) -> None:
        self.calls += 1
        self.expired.set()


async def test_overdue_item_expires_once_and_others_wait() -> None:
    sweeper = DeadlineSweeper(tick_s=0.001)
    overdue, cleared, later = _Waiter(), _Waiter(), _Waiter()
    now = sweeper.now()
    sweeper.expire_at(overdue, now)
    sweeper.expire_at(cleared, now)
    sweeper.expire_at(later, now + 3600)
    sweeper.clear(cleared)
    await overdue.expired.wait()
    assert (overdue.calls, cleared.calls, later.calls) == (1, 0, 0)
    sweeper.close()


async def test_timer_is_disarmed_when_nothing_is_pending() -> None:
    sweeper = DeadlineSweeper(tick_s=0.001)
    item = _Waiter()
    sweeper.expire_at(item, sweeper.now())
    await item.expired.wait()
    assert sweeper._timer is None  # no periodic wake-ups on an idle gateway
    sweeper.expire_at(item, sweeper.now() + 3600)  # re-arms
    assert sweeper._timer is not None
    sweeper.close()
    assert sweeper._timer is None
