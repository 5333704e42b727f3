"""The sim's prefix cache: chained hashes, hits, ref counts, capacity and LRU eviction."""

from __future__ import annotations

from dpserve.sim.block_pool import BlockPool, chain_block_hashes


def test_chained_hashes_depend_on_the_whole_prefix() -> None:
    a = chain_block_hashes([1, 2, 3, 4, 5], 2)
    b = chain_block_hashes([9, 2, 3, 4], 2)
    assert len(a) == 2 and len(b) == 2  # only full blocks
    assert a[1] != b[1]  # same tokens [3, 4], different prefix
    assert chain_block_hashes([1, 2, 3, 4], 2) == a
    assert chain_block_hashes([1, 2, 3, 4, 5, 6], 2, parent=a[1], start_block=2) == \
        chain_block_hashes([1, 2, 3, 4, 5, 6], 2)[2:]


def cache_blocks(pool: BlockPool, hashes: list[int]) -> list[int | None]:
    """Allocate blocks for a sequence, fill and promote them all, return its table."""
    blocks = pool.allocate(len(hashes))
    assert blocks is not None
    return [pool.promote(h) for h in hashes]


def test_hits_after_release_and_refcounts_block_eviction() -> None:
    pool = BlockPool(4)
    table = cache_blocks(pool, [10, 11])
    assert pool.count_hits([10, 11, 12]) == 2
    assert pool.usage == 0.5
    pool.release(table)
    assert pool.usage == 0.0 and pool.num_free == 4 and pool.num_cached == 2
    assert pool.count_hits([10, 11]) == 2
    assert pool.count_hits([11]) == 1 and pool.count_hits([99, 10]) == 0


def test_capacity_is_enforced() -> None:
    pool = BlockPool(3)
    assert pool.allocate(4) is None
    table = pool.allocate(3)
    assert table == [None, None, None] and pool.num_free == 0
    assert pool.allocate(1) is None
    assert not pool.can_allocate([], 1)
    pool.release(table)
    assert pool.num_free == 3


def test_lru_evicts_least_recently_released_tail_first() -> None:
    pool = BlockPool(4)
    old = cache_blocks(pool, [1, 2])
    pool.release(old)  # released order: 2 then 1 (tail first)
    new = cache_blocks(pool, [3, 4])
    pool.release(new)  # then 4, 3
    assert pool.allocate(1) is not None  # evicts 2: the oldest released
    assert pool.count_hits([1, 2]) == 1
    assert pool.count_hits([3, 4]) == 2
    assert pool.allocate(2) is not None  # evicts 1, then 4
    assert pool.count_hits([1]) == 0 and pool.count_hits([3, 4]) == 1


def test_referenced_blocks_are_never_evicted_and_revival_counts_against_room() -> None:
    pool = BlockPool(3)
    pool.release(cache_blocks(pool, [1, 2]))
    assert pool.can_allocate([1, 2], 1)
    assert not pool.can_allocate([1, 2], 2)  # reviving 1 and 2 leaves one free block
    table = pool.acquire([1, 2])
    assert pool.allocate(1) == [None]
    assert pool.allocate(1) is None
    assert pool.count_hits([1, 2]) == 2
    pool.release(table)


def test_duplicate_block_stays_plain_and_caching_can_be_off() -> None:
    pool = BlockPool(4)
    cache_blocks(pool, [7])
    pool.allocate(1)
    assert pool.promote(7) is None
    off = BlockPool(4, enable_caching=False)
    off.release(cache_blocks(off, [7]))
    assert off.count_hits([7]) == 0 and off.num_free == 4
