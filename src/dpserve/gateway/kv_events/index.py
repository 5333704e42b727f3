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
then follows the first one instead of scattering before its prefill publishes the blocks. A clear
(restart, lost events) voids that replica's pending decisions at once, by an epoch each carries.

Block size: each replica's comes with its BlockStored events (and is forgotten when it clears: a
restarted replica may run another configuration). Requests are keyed at the fleet's block size,
the one most replicas publish; a replica publishing another is not tracked (the approximate tree
routes to it), with one warning, so one odd or misconfigured replica never blinds the others.
LoRA blocks are skipped: a request's keys are its tokens only, so a block cached under an adapter
would look like a hit for a base-model request with the same tokens. For the same reason, so are
blocks whose vLLM hash mixes in `extra_keys` (cache_salt, multimodal identifiers, prompt
embeddings), from the first such block of an event on: the later ones chain from it, as do the
blocks later events store under it (their parent is then unknown here, so they are skipped too).

The pending decisions are bounded too (`max_pending_keys`, oldest first), and every per-replica
table forgets a replica the gateway drops.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter, OrderedDict
from collections.abc import Collection, Sequence

from dpserve.kv_events.block_hash import chain_key
from dpserve.kv_events.wire import AllBlocksCleared, BlockHash, BlockRemoved, BlockStored, KVEvent

log = logging.getLogger(__name__)


class _Worker:
    """One replica's blocks: its own hash → our key, oldest first; its block size once known."""

    __slots__ = ("block_size", "keys")

    def __init__(self) -> None:
        self.keys: OrderedDict[BlockHash, int] = OrderedDict()
        self.block_size: int | None = None


class KvBlockIndex:
    """block key → replicas holding it (from events), plus recent routing decisions."""

    def __init__(self, max_blocks_per_worker: int, pending_ttl_s: float) -> None:
        self.max_blocks_per_worker = max_blocks_per_worker
        self.pending_ttl_s = pending_ttl_s
        # The pending table's bound, oldest decisions dropped first; its size is otherwise rate x
        # TTL x keys per request (~4k keys for one 256k-character prompt). One replica's share of
        # the index: at the defaults honest traffic never reaches it (1 Mi distinct keys within the
        # 2 s TTL is 8 M prompt tokens a second at 16 per block, more than a fleet prefills), and a
        # flood of distinct long prompts costs at most one more replica's worth of memory (~125
        # bytes a key), keeping the newest decisions, the ones a burst follows.
        self.max_pending_keys = max_blocks_per_worker
        self.block_size: int | None = None  # the fleet's: most replicas' (None before any BlockStored)
        self._workers: dict[str, _Worker] = {}
        self._holders: dict[int, set[str]] = {}
        # key → (worker, expiry, the worker's epoch then); an epoch ends with each clear of the worker
        self._pending: OrderedDict[int, tuple[str, float, int]] = OrderedDict()
        # Per worker, its current epoch: numbers are never reused (`_epochs`), so a worker dropped
        # (its entry forgotten) and added again never revives the decisions made before.
        self._epoch: dict[str, int] = {}
        self._epochs = itertools.count(1)
        self._odd_sizes_logged: set[tuple[str, int]] = set()
        self.num_skipped_events = 0

    # -- feeding ------------------------------------------------------------------------------
    def is_tracked(self, worker_id: str) -> bool:
        """True once the worker's events reach the index (then its state is the truth), unless its
        blocks are not the fleet's size (keys at the fleet's size cannot match them)."""
        worker = self._workers.get(worker_id)
        return worker is not None and worker.block_size in (None, self.block_size)

    def num_blocks(self, worker_id: str) -> int:
        w = self._workers.get(worker_id)
        return 0 if w is None else len(w.keys)

    @property
    def size(self) -> int:
        return len(self._holders)

    def apply(self, worker_id: str, events: Sequence[KVEvent]) -> None:
        worker = self._workers.get(worker_id)
        if worker is None:
            worker = self._workers[worker_id] = _Worker()
        last_clear = -1
        for i, event in enumerate(events):
            if isinstance(event, AllBlocksCleared):
                last_clear = i
        if last_clear >= 0:  # what came before the last clear of a batch is gone with it
            self._clear(worker_id, worker)
            events = events[last_clear + 1:]
        for event in events:
            if isinstance(event, BlockStored):
                self._stored(worker_id, worker, event)
            elif isinstance(event, BlockRemoved):
                for h in event.block_hashes:
                    key = worker.keys.pop(h, None)
                    if key is not None:
                        self._unhold(key, worker_id)

    def drop_worker(self, worker_id: str) -> None:
        """The worker left: forget it entirely (it is untracked until its events come again); its
        pending decisions are void (they expire in place)."""
        worker = self._workers.pop(worker_id, None)
        if worker is not None:
            self._clear(worker_id, worker)
            self._elect_block_size()
        self._epoch.pop(worker_id, None)
        self._odd_sizes_logged = {logged for logged in self._odd_sizes_logged if logged[0] != worker_id}

    def _stored(self, worker_id: str, worker: _Worker, event: BlockStored) -> None:
        bs = event.block_size
        if worker.block_size is None:
            worker.block_size = bs
            self._elect_block_size()
            if bs != self.block_size and (worker_id, bs) not in self._odd_sizes_logged:
                self._odd_sizes_logged.add((worker_id, bs))
                log.warning("kv events: %s caches blocks of %d tokens, the fleet's are %s: it is routed "
                            "by the approximate tree", worker_id, bs, self.block_size)
        hashes = event.block_hashes
        if (bs != worker.block_size or event.lora_id is not None or event.lora_name is not None
                or len(event.token_ids) < bs * len(hashes)):
            self.num_skipped_events += 1
            return
        prev: int | None = None
        if event.parent_block_hash is not None:
            prev = worker.keys.get(event.parent_block_hash)
            if prev is None:  # its prefix is unknown here: no request could walk to it
                self.num_skipped_events += 1
                return
        if event.extra_keys is not None:  # from the first block with extra keys on, the blocks hold
            # more than their tokens (the decoder leaves it None when no block has any)
            first = next((i for i, keys in enumerate(event.extra_keys) if keys is not None), len(hashes))
            if first < len(hashes):
                self.num_skipped_events += 1
                hashes = hashes[:first]
        tokens = event.token_ids
        for i, h in enumerate(hashes):
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
        self._epoch[worker_id] = next(self._epochs)  # voids its pending decisions
        if worker.block_size is not None:
            worker.block_size = None
            self._elect_block_size()

    def _elect_block_size(self) -> None:
        """The fleet's block size: the one most replicas publish (on a tie the current one stays,
        else the smallest)."""
        sizes = Counter(w.block_size for w in self._workers.values() if w.block_size is not None)
        if sizes:
            most = max(sizes.values())
            tied = [b for b, n in sizes.items() if n == most]
            self.block_size = self.block_size if self.block_size in tied else min(tied)
        # else: keep the last one (the fleet cleared at once, e.g. restarted); keys stay comparable

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
        epoch = self._epoch.get(worker_id)
        if epoch is None:
            epoch = self._epoch[worker_id] = next(self._epochs)
        entry = (worker_id, expiry, epoch)
        pending = self._pending
        for key in keys[:self.max_pending_keys]:  # a prompt past the bound: its head, which matches
            pending.pop(key, None)
            pending[key] = entry
        while pending:  # oldest first: drop the expired ones
            key, (_, exp, _) = next(iter(pending.items()))
            if exp > now:
                break
            del pending[key]
        while len(pending) > self.max_pending_keys:  # then the oldest past the bound
            pending.popitem(last=False)

    def match(self, keys: Sequence[int], worker_ids: Collection[str], now: float) -> dict[str, int]:
        """Per worker: how many leading blocks of `keys` it holds (events, or a recent decision)."""
        matched = dict.fromkeys(worker_ids, 0)
        alive = set(worker_ids)
        epoch = self._epoch
        for i, key in enumerate(keys):
            holders = self._holders.get(key, ())
            pending = self._pending.get(key)
            if pending is not None and (pending[1] <= now or pending[2] != epoch.get(pending[0])):
                pending = None  # expired, or made before its worker's last clear (or drop)
            still = {w for w in alive if w in holders or (pending is not None and pending[0] == w)}
            for w in alive - still:
                matched[w] = i
            alive = still
            if not alive:
                return matched
        for w in alive:
            matched[w] = len(keys)
        return matched
