"""DeadlineSweeper: coarse timeouts for many short waits, without a timer per wait.

`asyncio.timeout` costs ~4.6 µs per use on uvloop (a TimerHandle with its libuv timer, task
cancel bookkeeping) and ~10 µs with a `reschedule`; the proxy paid that on every request for
waits that almost never time out. Here a waiter only records its deadline in a dict; one timer,
armed while any deadline is pending, wakes every `tick_s` and expires the overdue ones. A
timeout therefore fires up to `tick_s` (plus the loop clock's 1 ms resolution) late.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

DEFAULT_TICK_S = 0.01


class Expirable(Protocol):
    def expire(self) -> None:
        """The deadline passed: fail whatever waits on this object (called once, on the loop)."""


class DeadlineSweeper:
    """Deadlines in loop time (`loop.time()`); `expire_at` replaces an item's earlier deadline."""

    def __init__(self, tick_s: float = DEFAULT_TICK_S) -> None:
        self._tick_s = tick_s
        self._pending: dict[Expirable, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def now(self) -> float:
        return self._running_loop().time()

    def expire_at(self, item: Expirable, at: float) -> None:
        self._pending[item] = at
        if self._timer is None:
            self._timer = self._running_loop().call_later(self._tick_s, self._sweep)

    def clear(self, item: Expirable) -> None:
        self._pending.pop(item, None)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:  # looked up once: get_running_loop() is a getpid() syscall on 3.11
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _sweep(self) -> None:
        loop = self._running_loop()
        now = loop.time()
        overdue = [item for item, at in self._pending.items() if at <= now]
        for item in overdue:
            del self._pending[item]
            item.expire()
        self._timer = loop.call_later(self._tick_s, self._sweep) if self._pending else None
