"""Which replica holds which KV block, from the replicas' own events: one index for the gateway.

Keyed by the gateway's deterministic chained key of the block's tokens (`kv_events.block_hash`),
computed from the token ids every BlockStored carries, not by the replica's own hash (vLLM's may
be process-random); a per-replica map from the replica's hash to the key resolves parents and
BlockRemoved. A block stored under a parent the index does not know is unreachable by a prefix
walk and is skipped. Memory is bounded: at most `max_blocks_per_worker` entries per replica, the
oldest dropped first (a replica's real cache is bounded too; this only guards against lost
BlockRemoved events).

Besides the truth, the index keeps the gateway's own recent routing decisions ("pending": the
request's keys on the chosen replica) for `pending_ttl_s`: a burst of requests sharing a new prefix
then follows the first one instead of scattering before its prefill publishes the blocks.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence

from dpserve.kv_events.block_hash import chain_key
from dpserve.kv_events.wire import AllBlocksCleared, BlockHash, BlockRemoved, BlockStored, KVEvent

log = logging.getLogger(__name__)


class _Worker:
    """One replica's blocks: its own hash → our key, oldest first."""

    __slots__ = ("keys",)

    def __init__(self) -> None:
        self.keys: OrderedDict[BlockHash, int] = OrderedDict()


class KvBlockIndex:
    """block key → replicas holding it (from events), plus recent routing decisions."""

    def __init__(self, max_blocks_per_worker: int, pending_ttl_s: float) -> None:
        self.max_blocks_per_worker = max_blocks_per_worker
        self.pending_ttl_s = pending_ttl_s
        self.block_size: int | None = None  # learned from the first BlockStored
        self._workers: dict[str, _Worker] = {}
        self._holders: dict[int, set[str]] = {}
        self._pending: OrderedDict[int, tuple[str, float]] = OrderedDict()  # key → (worker, expiry)
        self.num_skipped_events = 0

    # -- feeding ------------------------------------------------------------------------------
    def is_tracked(self, worker_id: str) -> bool:
        """True once the worker's events reach the index (then its state is the truth)."""
        return worker_id in self._workers

    def num_blocks(self, worker_id: str) -> int:
        w = self._workers.get(worker_id)
        return 0 if w is None else len(w.keys)

    @property
    def size(self) -> int:
        return len(self._holders)

    def apply(self, worker_id: str, events: Iterable[KVEvent]) -> None:
        worker = self._workers.get(worker_id)
        if worker is None:
            worker = self._workers[worker_id] = _Worker()
        for event in events:
            if isinstance(event, BlockStored):
                self._stored(worker_id, worker, event)
            elif isinstance(event, BlockRemoved):
                for h in event.block_hashes:
                    key = worker.keys.pop(h, None)
                    if key is not None:
                        self._unhold(key, worker_id)
            elif isinstance(event, AllBlocksCleared):
                self._clear(worker_id, worker)

    def drop_worker(self, worker_id: str) -> None:
        """The worker left: forget it entirely (it is untracked until its events come again)."""
        worker = self._workers.pop(worker_id, None)
        if worker is not None:
            self._clear(worker_id, worker)

    def _stored(self, worker_id: str, worker: _Worker, event: BlockStored) -> None:
        bs = event.block_size
        if self.block_size is None:
            self.block_size = bs
        if bs != self.block_size or len(event.token_ids) < bs * len(event.block_hashes):
            self.num_skipped_events += 1
            return
        prev: int | None = None
        if event.parent_block_hash is not None:
            prev = worker.keys.get(event.parent_block_hash)
            if prev is None:  # its prefix is unknown here: no request could walk to it
                self.num_skipped_events += 1
                return
        tokens = event.token_ids
        for i, h in enumerate(event.block_hashes):
            prev = chain_key(prev, tuple(tokens[i * bs:(i + 1) * bs]))
            if h in worker.keys:
                worker.keys.move_to_end(h)
                continue
            worker.keys[h] = prev
            self._holders.setdefault(prev, set()).add(worker_id)
        while len(worker.keys) > self.max_blocks_per_worker:
            _, key = worker.keys.popitem(last=False)
            self._unhold(key, worker_id)

    def _clear(self, worker_id: str, worker: _Worker) -> None:
        for key in worker.keys.values():
            self._unhold(key, worker_id)
        worker.keys.clear()
        stale = [k for k, (w, _) in self._pending.items() if w == worker_id]
        for k in stale:
            del self._pending[k]

    def _unhold(self, key: int, worker_id: str) -> None:
        holders = self._holders.get(key)
        if holders is not None:
            holders.discard(worker_id)
            if not holders:
                del self._holders[key]

    # -- routing ------------------------------------------------------------------------------
    def note_routed(self, worker_id: str, keys: Sequence[int], now: float) -> None:
        """The gateway sent a request with these keys to `worker_id`: count them there for a while."""
        expiry = now + self.pending_ttl_s
        for key in keys:
            self._pending.pop(key, None)
            self._pending[key] = (worker_id, expiry)
        while self._pending:  # oldest first: drop the expired ones
            key, (_, exp) = next(iter(self._pending.items()))
            if exp > now:
                break
            del self._pending[key]

    def match(self, keys: Sequence[int], worker_ids: Collection[str], now: float) -> dict[str, int]:
        """Per worker: how many leading blocks of `keys` it holds (events, or a recent decision)."""
        matched = dict.fromkeys(worker_ids, 0)
        alive = set(worker_ids)
        for i, key in enumerate(keys):
            holders = self._holders.get(key, ())
            pending = self._pending.get(key)
            still = {w for w in alive if w in holders or (pending is not None and pending[0] == w
                                                          and pending[1] > now)}
            for w in alive - still:
                matched[w] = i
            alive = still
            if not alive:
                return matched
        for w in alive:
            matched[w] = len(keys)
        return matched
