"""Which request a replica gets next: the assigner contract, retries, and plain FIFO pulling.

Pure and synchronous (no I/O, no clock): the dispatcher calls `next_for` each time one of a
replica's in-flight slots frees up, which is what makes distribution dynamic — a slow replica
simply asks less often. Retries come first and go to a replica that has not tried them yet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from dpserve.offline.reader import RequestRef

Admit = Callable[[int], bool]


@dataclass(frozen=True)
class WorkItem:
    """A request on its way: how often it failed and on which replicas."""

    ref: RequestRef
    attempts: int = 0
    tried: frozenset[str] = field(default_factory=frozenset)
    last_error: str = ""

    def failed_on(self, replica_id: str, error: str) -> WorkItem:
        return replace(self, attempts=self.attempts + 1, tried=self.tried | {replica_id}, last_error=error)


class Assigner(Protocol):
    def next_for(self, replica_id: str, healthy: frozenset[str], admit: Admit) -> WorkItem | None:
        """The next item for `replica_id`, or None if nothing may start there now.

        `healthy` are the replicas currently up (a retry waits for an untried one among them);
        `admit(line_no)` says whether a fresh request may start (the ordered writer's window).
        """
        ...

    def requeue(self, item: WorkItem) -> None:
        """Put a failed item back; it is handed out before fresh work."""
        ...

    def on_settled(self, item: WorkItem) -> None:
        """An attempt at `item` ended (success, final failure or requeue)."""
        ...

    @property
    def num_queued(self) -> int:
        """Items not yet handed out (fresh and retries)."""
        ...


class RetryQueue:
    def __init__(self) -> None:
        self._items: deque[WorkItem] = deque()

    def append(self, item: WorkItem) -> None:
        self._items.append(item)

    def __len__(self) -> int:
        return len(self._items)

    def take(self, replica_id: str, healthy: frozenset[str]) -> WorkItem | None:
        """The oldest retry this replica has not tried, or that no healthy replica is left to try."""
        for item in self._items:
            if replica_id not in item.tried or healthy <= item.tried:
                self._items.remove(item)
                return item
        return None


class FifoAssigner:
    """Input order; every replica pulls from one shared queue."""

    def __init__(self, refs: Iterable[RequestRef]) -> None:
        self._fresh = deque(refs)
        self._retries = RetryQueue()

    def next_for(self, replica_id: str, healthy: frozenset[str], admit: Admit) -> WorkItem | None:
        item = self._retries.take(replica_id, healthy)
        if item is not None:
            return item
        if self._fresh and admit(self._fresh[0].line_no):
            return WorkItem(self._fresh.popleft())
        return None

    def requeue(self, item: WorkItem) -> None:
        self._retries.append(item)

    def on_settled(self, item: WorkItem) -> None:
        return None

    @property
    def num_queued(self) -> int:
        return len(self._fresh) + len(self._retries)
