"""Paged KV block accounting: ref counts, prefix cache keyed by chained block hashes, LRU eviction.

Plain Python (no torch) so it is unit-tested exactly. A block is in exactly one of three states:
free (no content), cached (content registered by hash, ref count 0, evictable in LRU order), or
in use (ref count > 0, possibly shared by several sequences through the prefix cache).

With `record_events`, it also records vLLM-style KV events as they happen (BlockStored when full
blocks are registered, BlockRemoved when a cached block is evicted, AllBlocksCleared when it is
created empty); the engine takes them once per step (`take_events`) for its publisher.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence as Seq

from dpserve.engine.sequence import Sequence
from dpserve.kv_events.block_hash import chain_key as block_hash
from dpserve.kv_events.wire import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent


class BlockManager:
    """Owns which KV blocks each sequence holds; never touches tensors."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True,
                 record_events: bool = False) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._ref_counts = [0] * num_blocks
        self._hashes: list[int | None] = [None] * num_blocks
        self._tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()  # ref 0, cached; oldest first
        self._hash_to_block: dict[int, int] = {}
        self.prefix_cache_queries = 0  # cumulative prompt tokens looked up
        self.prefix_cache_hits = 0  # cumulative prompt tokens found
        # None: not recorded (no cost). A new manager's cache is empty: say so first.
        self._events: list[KVEvent] | None = [AllBlocksCleared()] if record_events else None

    def take_events(self) -> list[KVEvent]:
        """The KV events since the last call (empty when not recording)."""
        events = self._events
        if not events:
            return []
        self._events = []
        return events

    # -- capacity -----------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks allocatable now: empty ones plus unreferenced cached ones (evicted on demand)."""
        return len(self._free) + len(self._evictable)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._hash_to_block)

    @property
    def usage(self) -> float:
        """Fraction of blocks referenced by a live sequence (vLLM's kv_cache_usage_perc)."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # -- prefix cache -------------------------------------------------------------------------
    def allocate_cached_prefix(self, seq: Sequence) -> int:
        """Attach the longest cached run of full blocks to a sequence that holds none; returns the
        number of tokens now computed. The last token is never taken from the cache: the model must
        run on at least one token to produce the next one's logits."""
        assert not seq.block_table and seq.num_computed_tokens == 0
        if not self.enable_prefix_caching:
            return 0
        bs = self.block_size
        prev: int | None = None
        for i in range((seq.num_tokens - 1) // bs):
            tokens = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            key = block_hash(prev, tokens)
            block_id = self._hash_to_block.get(key)
            if block_id is None or self._tokens[block_id] != tokens:  # miss, or a hash collision
                break
            self._acquire(block_id)
            seq.block_table.append(block_id)
            seq.block_hashes.append(key)
            prev = key
        seq.num_computed_tokens = len(seq.block_table) * bs
        return seq.num_computed_tokens

    def record_lookup(self, num_queried: int, num_hit: int) -> None:
        """Count one admitted lookup (not every retry of a request that had to keep waiting)."""
        self.prefix_cache_queries += num_queried
        self.prefix_cache_hits += num_hit

    def commit_full_blocks(self, seq: Sequence) -> None:
        """Register the sequence's newly completed blocks (all tokens computed) in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        stored: BlockStored | None = None  # the run of blocks registered in this call
        for i in range(len(seq.block_hashes), seq.num_computed_tokens // bs):
            tokens = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            key = block_hash(parent, tokens)
            seq.block_hashes.append(key)
            block_id = seq.block_table[i]
            if key in self._hash_to_block:  # a concurrent twin registered it first
                stored = None
                continue
            self._hash_to_block[key] = block_id
            self._hashes[block_id] = key
            self._tokens[block_id] = tokens
            if self._events is not None:
                if stored is None:
                    stored = BlockStored([], parent, [], bs)
                    self._events.append(stored)
                stored.block_hashes.append(key)
                stored.token_ids.extend(tokens)

    # -- allocation ---------------------------------------------------------------------------
    def ensure_slots(self, seq: Sequence, num_tokens: int) -> bool:
        """Grow the block table to hold `num_tokens` tokens; False (nothing changed) if not enough
        blocks are free even after evicting every unreferenced cached block."""
        needed = self.blocks_needed(num_tokens) - len(seq.block_table)
        if needed <= 0:
            return True
        if needed > self.num_free_blocks:
            return False
        for _ in range(needed):
            seq.block_table.append(self._allocate_block())
        return True

    def free(self, seq: Sequence) -> None:
        """Drop the sequence's references. Cached blocks stay reusable until space is needed; the
        tail is queued for eviction first so shared prefixes live longest."""
        for block_id in reversed(seq.block_table):
            self._ref_counts[block_id] -= 1
            assert self._ref_counts[block_id] >= 0, "block freed twice"
            if self._ref_counts[block_id] == 0:
                if self._hashes[block_id] is not None:
                    self._evictable[block_id] = None
                else:
                    self._free.append(block_id)
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def _acquire(self, block_id: int) -> None:
        if self._ref_counts[block_id] == 0:
            self._evictable.pop(block_id, None)
        self._ref_counts[block_id] += 1

    def _allocate_block(self) -> int:
        if self._free:
            block_id = self._free.popleft()
        else:  # evict the least recently released cached block, only now that space is needed
            block_id, _ = self._evictable.popitem(last=False)
            key = self._hashes[block_id]
            if key is not None and self._hash_to_block.get(key) == block_id:
                del self._hash_to_block[key]
                self._record_removed(key)
            self._hashes[block_id] = None
            self._tokens[block_id] = None
        self._ref_counts[block_id] = 1
        return block_id

    def _record_removed(self, key: int) -> None:
        if self._events is None:
            return
        last = self._events[-1] if self._events else None
        if isinstance(last, BlockRemoved):
            last.block_hashes.append(key)
        else:
            self._events.append(BlockRemoved([key]))

    def check_consistency(self, live: Seq[Sequence]) -> None:
        """Assert ref counts equal the live sequences' references (used by tests to catch leaks)."""
        expected = [0] * self.num_blocks
        for seq in live:
            for block_id in seq.block_table:
                expected[block_id] += 1
        assert expected == self._ref_counts, "ref counts disagree with live block tables"
        idle = set(self._free) | set(self._evictable)
        assert idle == {b for b in range(self.num_blocks) if expected[b] == 0}, "leaked blocks"
