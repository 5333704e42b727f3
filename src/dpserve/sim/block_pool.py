"""The sim's KV blocks with a real prefix cache: chained block hashes, ref counts, LRU eviction.

A sequence holds a list of blocks, each either a cached block (its chained hash) or a plain one
(None). Full blocks are promoted to cached blocks keyed by the hash of (previous hash, tokens),
so a block hit implies the whole prefix before it matches. Blocks nobody references stay cached
and are evicted least-recently-released first, only when a new block is needed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

BlockRef = int | None  # a cached block's hash, or None for a plain (unshareable) block


def chain_block_hashes(token_ids: Sequence[int], block_size: int, parent: int | None = None,
                       start_block: int = 0) -> list[int]:
    """Hashes of the full blocks of `token_ids` from `start_block` on; `parent` is the hash of
    block `start_block - 1` (None at the start)."""
    hashes = []
    prev = parent
    for start in range(start_block * block_size, len(token_ids) - block_size + 1, block_size):
        prev = hash((prev, tuple(token_ids[start:start + block_size])))
        hashes.append(prev)
    return hashes


class BlockPool:
    """Counts of free/plain blocks plus the cached blocks by hash; no per-block objects needed."""

    def __init__(self, num_blocks: int, enable_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self._num_free_plain = num_blocks
        self._refs: dict[int, int] = {}  # every cached block: hash → reference count
        self._evictable: OrderedDict[int, None] = OrderedDict()  # ref 0, oldest release first

    @property
    def num_free(self) -> int:
        """Blocks a new allocation may take (free ones and evictable cached ones)."""
        return self._num_free_plain + len(self._evictable)

    @property
    def num_cached(self) -> int:
        return len(self._refs)

    @property
    def usage(self) -> float:
        """Fraction of blocks referenced by some sequence (vLLM's kv_cache_usage_perc)."""
        return (self.num_blocks - self.num_free) / self.num_blocks

    def count_hits(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of `hashes` are cached."""
        if not self.enable_caching:
            return 0
        n = 0
        for h in hashes:
            if h not in self._refs:
                break
            n += 1
        return n

    def can_allocate(self, hit_hashes: Sequence[int], num_new: int) -> bool:
        """Whether acquiring `hit_hashes` and then `num_new` fresh blocks would succeed."""
        revived = sum(1 for h in hit_hashes if h in self._evictable)
        return num_new <= self.num_free - revived

    def acquire(self, hit_hashes: Sequence[int]) -> list[BlockRef]:
        """Reference cached blocks (a prefix hit); they can no longer be evicted."""
        for h in hit_hashes:
            self._refs[h] += 1
            self._evictable.pop(h, None)
        return list(hit_hashes)

    def allocate(self, num_new: int) -> list[BlockRef] | None:
        """`num_new` plain blocks, evicting LRU cached blocks if needed; None if not enough."""
        if num_new > self.num_free:
            return None
        for _ in range(num_new):
            if self._num_free_plain == 0:
                evicted, _ = self._evictable.popitem(last=False)
                del self._refs[evicted]
                self._num_free_plain += 1
            self._num_free_plain -= 1
        return [None] * num_new

    def promote(self, block_hash: int) -> BlockRef:
        """A sequence filled one of its plain blocks: make it a cached block keyed `block_hash`.

        Returns the new ref for the sequence's table: the hash, or None when an identical block
        is already cached (the copy stays plain, as in vLLM).
        """
        if not self.enable_caching or block_hash in self._refs:
            return None
        self._refs[block_hash] = 1
        return block_hash

    def release(self, blocks: Sequence[BlockRef]) -> None:
        """Drop one reference to each block; tail blocks first so they are evicted first."""
        for ref in reversed(blocks):
            if ref is None:
                self._num_free_plain += 1
                continue
            self._refs[ref] -= 1
            if self._refs[ref] == 0:
                self._evictable[ref] = None
