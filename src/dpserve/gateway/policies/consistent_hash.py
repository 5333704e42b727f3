"""consistent_hash: sticky sessions on a hash ring with virtual nodes and bounded loads."""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence

from dpserve.gateway.policies.base import Candidate, Choice, Policy, RouteRequest, least_loaded
from dpserve.gateway.policies.config import PolicyConfig

# Sessions moved by failover that we remember (LRU), so memory stays bounded.
_MAX_MOVED_SESSIONS = 100_000


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Virtual nodes (count scaled by weight) on a 64-bit ring; adding a worker moves ~1/n keys.

    A change rebuilds the ring with one sort, O(n log n) in its points: inserting point by point
    into sorted lists was O(n²) and froze the gateway for 12 s on a weight-1,000 worker.
    """

    def __init__(self, virtual_nodes: int) -> None:
        self.virtual_nodes = virtual_nodes
        self._points: list[int] = []
        self._owners: list[str] = []
        self._count_of: dict[str, int] = {}  # worker → its points (ring order walks stop early)

    def add(self, worker_id: str, weight: float) -> None:
        count = max(1, round(self.virtual_nodes * weight))
        pairs = [(p, o) for p, o in zip(self._points, self._owners, strict=True) if o != worker_id]
        pairs += [(_hash(f"{worker_id}#{i}"), worker_id) for i in range(count)]
        self._count_of[worker_id] = count
        self._rebuild(pairs)

    def remove(self, worker_id: str) -> None:
        if self._count_of.pop(worker_id, None) is not None:
            self._rebuild([(p, o) for p, o in zip(self._points, self._owners, strict=True) if o != worker_id])

    def _rebuild(self, pairs: list[tuple[int, str]]) -> None:
        pairs.sort()
        self._points = [p for p, _ in pairs]
        self._owners = [o for _, o in pairs]

    def walk(self, key: str) -> list[str]:
        """Distinct workers in ring order starting at the key's position.

        Stops once every worker was seen: a request costs the distance to the last of them
        (about n·ln n points for n workers), not the whole ring.
        """
        points, owners = self._points, self._owners
        if not points:
            return []
        size, distinct = len(points), len(self._count_of)
        start = bisect.bisect(points, _hash(key))
        seen: dict[str, None] = {}
        for i in range(start, start + size):
            seen.setdefault(owners[i % size], None)
            if len(seen) == distinct:
                break
        return list(seen)


class ConsistentHashPolicy(Policy):
    """`x-session-id` (else `user`) → its home on the ring; past the load bound, the ring's next.

    Bound: in-flight + 1 may not exceed `hash_balance_factor` × the mean (weighted) in-flight
    after adding this request. A session moved off a down home stays where its cache now is,
    unless `--sticky-return-home`. Requests without a key go to the least loaded worker.
    """

    name = "consistent_hash"

    def __init__(self, config: PolicyConfig, rng: random.Random, clock: Callable[[], float]) -> None:
        super().__init__(config, rng, clock)
        self.ring = HashRing(config.hash_virtual_nodes)
        self._moved: OrderedDict[str, str] = OrderedDict()

    def select(self, candidates: Sequence[Candidate], request: RouteRequest) -> Choice:
        key = request.session_key
        if key is None:
            return Choice(least_loaded(candidates, self.rng), "no_key")
        by_id = {w.id: w for w in candidates}
        moved = self._moved.get(key)
        stay = by_id.get(moved) if moved is not None and not self.config.sticky_return_home else None
        if stay is not None and self._within_bound(stay, candidates):
            self._moved.move_to_end(key)
            return Choice(stay, "sticky")
        return self._walk_ring(key, by_id, candidates)

    def _walk_ring(self, key: str, by_id: dict[str, Candidate], candidates: Sequence[Candidate]) -> Choice:
        ring_order = self.ring.walk(key)
        home = ring_order[0] if ring_order else None
        overflowed = False
        for worker_id in ring_order:
            worker = by_id.get(worker_id)
            if worker is None:
                continue
            if not self._within_bound(worker, candidates):
                overflowed = True
                continue
            if worker_id == home:
                self._moved.pop(key, None)
                return Choice(worker, "sticky")
            if not overflowed:  # home is down or busy elsewhere: the session moves with its cache
                self._remember(key, worker_id)
            return Choice(worker, "overflow" if overflowed else "failover")
        return Choice(least_loaded(candidates, self.rng), "overflow")

    def _within_bound(self, worker: Candidate, candidates: Sequence[Candidate]) -> bool:
        total_in_flight = sum(w.in_flight for w in candidates) + 1
        total_weight = sum(w.weight for w in candidates)
        bound = self.config.hash_balance_factor * total_in_flight * worker.weight / total_weight
        return worker.in_flight + 1 <= max(1, math.ceil(bound))

    def _remember(self, key: str, worker_id: str) -> None:
        self._moved[key] = worker_id
        self._moved.move_to_end(key)
        while len(self._moved) > _MAX_MOVED_SESSIONS:
            self._moved.popitem(last=False)

    def on_worker_added(self, worker: Candidate) -> None:
        self.ring.add(worker.id, worker.weight)

    def on_worker_removed(self, worker_id: str) -> None:
        self.ring.remove(worker_id)
        for key in [k for k, w in self._moved.items() if w == worker_id]:
            del self._moved[key]
