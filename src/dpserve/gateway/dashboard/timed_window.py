"""TimedWindow: values stamped with their time, oldest first, covering a little more than a span (bounded)."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class TimedWindow(Generic[T]):
    """Keeps what arrived in the last `span_s`, plus the one value just before it (the base of deltas
    over the whole span). `max_items` bounds the memory whatever the clock and arrival rate do."""

    def __init__(self, span_s: float, max_items: int) -> None:
        self._span_s = span_s
        self._items: deque[tuple[float, T]] = deque(maxlen=max_items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, t: float, value: T) -> bool:
        """Keep `value` taken at `t`; False (ignored) when `t` is not newer than the last one."""
        if self._items and t <= self._items[-1][0]:
            return False
        self._items.append((t, value))
        while len(self._items) > 2 and self._items[1][0] <= t - self._span_s:
            self._items.popleft()
        return True

    def last(self) -> tuple[float, T] | None:
        return self._items[-1] if self._items else None

    def base(self, since: float) -> tuple[float, T]:
        """The newest item at or before `since`, else the oldest held (the window must not be empty)."""
        base = self._items[0]
        for item in self._items:
            if item[0] > since:
                break
            base = item
        return base

    def since(self, start: float, at_least: int = 0) -> list[tuple[float, T]]:
        """Items at or after `start`; the last `at_least` items when fewer are."""
        recent = [item for item in self._items if item[0] >= start]
        return recent if len(recent) >= at_least else list(self._items)[-at_least:]
