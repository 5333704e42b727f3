"""WaitQueue: the gateway queue's order — priority classes, then arrival — with O(log n) removal."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(order=True)
class QueueEntry(Generic[T]):
    """One waiting item; `removed` entries stay in the heap until they surface (lazy deletion)."""

    priority: int
    seq: int
    item: T = field(compare=False)
    removed: bool = field(default=False, compare=False)


class WaitQueue(Generic[T]):
    """Lower priority value first; equal priorities in order of arrival. Pure, no clock, no I/O."""

    def __init__(self) -> None:
        self._heap: list[QueueEntry[T]] = []
        self._seq = itertools.count()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def push(self, item: T, priority: int = 0) -> QueueEntry[T]:
        entry = QueueEntry(priority, next(self._seq), item)
        heapq.heappush(self._heap, entry)
        self._live += 1
        return entry

    def pop(self) -> T | None:
        """The next item in service order, or None when empty."""
        while self._heap:
            entry = heapq.heappop(self._heap)
            if not entry.removed:
                self._live -= 1
                entry.removed = True
                return entry.item
        return None

    def remove(self, entry: QueueEntry[T]) -> bool:
        """Take `entry` out (timed out / cancelled); False when it had already left."""
        if entry.removed:
            return False
        entry.removed = True
        self._live -= 1
        return True

    def ahead_of(self, entry: QueueEntry[T]) -> int:
        """How many live entries will be served before `entry` (O(n); only for rejections)."""
        return sum(1 for e in self._heap if not e.removed and e < entry)
