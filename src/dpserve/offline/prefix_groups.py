"""--group-by-prefix: requests sharing a long prompt prefix go to one replica, back to back.

A replica that opens a group sends its first request (the leader) alone; the rest of the group
waits until the leader has finished, so they all find the prefix in that replica's cache instead
of prefilling it side by side in one step. While a group warms up, the replica's other slots open
another group or take ungrouped work; at the very end idle replicas steal from the tail of other
replicas' groups, so nobody sits idle while work is left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from dpserve.offline.assignment import Admit, RetryQueue, WorkItem
from dpserve.offline.reader import RequestRef


@dataclass
class _Group:
    refs: deque[RequestRef]
    leader_line: int | None = None  # set while the leader is in flight
    owner: str | None = None

    @property
    def is_warm(self) -> bool:
        return self.leader_line is None and bool(self.refs)


@dataclass
class _Owned:
    groups: list[_Group] = field(default_factory=list)

    def warm(self) -> _Group | None:
        self.groups = [g for g in self.groups if g.refs or g.leader_line is not None]
        return next((g for g in self.groups if g.is_warm), None)


class PrefixGroupAssigner:
    """Groups (equal prefix_key, two or more requests), largest first; then ungrouped work."""

    def __init__(self, refs: Iterable[RequestRef]) -> None:
        by_key: dict[bytes, deque[RequestRef]] = {}
        loose: list[RequestRef] = []
        for ref in refs:
            if ref.prefix_key is None:
                loose.append(ref)
            else:
                by_key.setdefault(ref.prefix_key, deque()).append(ref)
        groups = sorted(by_key.values(), key=len, reverse=True)
        loose += [g[0] for g in groups if len(g) == 1]
        self._unowned = deque(_Group(g) for g in groups if len(g) > 1)
        self._loose = deque(sorted(loose, key=lambda r: r.line_no))
        self._owned: dict[str, _Owned] = {}
        self._warming: dict[int, _Group] = {}  # leader line → its group
        self._retries = RetryQueue()

    def next_for(self, replica_id: str, healthy: frozenset[str], admit: Admit) -> WorkItem | None:
        item = self._retries.take(replica_id, healthy)
        if item is not None:
            return item
        ref = self._from_warm_group(replica_id) or self._open_group(replica_id) or self._from_loose() \
            or self._steal(replica_id)
        return WorkItem(ref) if ref is not None else None

    def _from_warm_group(self, replica_id: str) -> RequestRef | None:
        group = self._owned.setdefault(replica_id, _Owned()).warm()
        return group.refs.popleft() if group is not None else None

    def _open_group(self, replica_id: str) -> RequestRef | None:
        if not self._unowned:
            return None
        group = self._unowned.popleft()
        group.owner = replica_id
        leader = group.refs.popleft()
        group.leader_line = leader.line_no
        self._warming[leader.line_no] = group
        self._owned.setdefault(replica_id, _Owned()).groups.append(group)
        return leader

    def _from_loose(self) -> RequestRef | None:
        return self._loose.popleft() if self._loose else None

    def _steal(self, replica_id: str) -> RequestRef | None:
        """The tail of the biggest warm group of another replica (its owner keeps the head)."""
        victims = [g for r, owned in self._owned.items() if r != replica_id
                   for g in owned.groups if g.is_warm]
        if not victims:
            return None
        return max(victims, key=lambda g: len(g.refs)).refs.pop()

    def requeue(self, item: WorkItem) -> None:
        self._retries.append(item)

    def on_settled(self, item: WorkItem) -> None:
        """The leader's attempt ended: its prefix is cached (or not); release the rest of the group."""
        group = self._warming.pop(item.ref.line_no, None)
        if group is not None:
            group.leader_line = None

    @property
    def num_queued(self) -> int:
        owned = sum(len(g.refs) for o in self._owned.values() for g in o.groups)
        return sum(len(g.refs) for g in self._unowned) + owned + len(self._loose) + len(self._retries)
