"""BlockManager: ref counts, chained prefix hashes, LRU eviction only under pressure, no leaks."""

from __future__ import annotations

from dpserve.engine.block_manager import BlockManager, block_hash
from dpserve.engine.sequence import Sequence
from dpserve.serving.engine_client import SamplingParams


def make_seq(tokens: list[int], rid: str = "r") -> Sequence:
    return Sequence(rid, list(tokens), SamplingParams())


def run_prefill(bm: BlockManager, seq: Sequence) -> None:
    """What the scheduler + engine do for a whole prompt: match, allocate, compute, commit."""
    bm.allocate_cached_prefix(seq)
    assert bm.ensure_slots(seq, seq.num_tokens)
    seq.num_computed_tokens = seq.num_tokens
    bm.commit_full_blocks(seq)


def test_allocation_and_free_restore_every_block() -> None:
    bm = BlockManager(num_blocks=4, block_size=4, enable_prefix_caching=False)
    seq = make_seq(list(range(10)))
    run_prefill(bm, seq)
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 1
    assert bm.usage == 0.75
    bm.check_consistency([seq])
    bm.free(seq)
    assert bm.num_free_blocks == 4 and bm.usage == 0.0
    bm.check_consistency([])


def test_ensure_slots_fails_without_side_effects() -> None:
    bm = BlockManager(num_blocks=2, block_size=4)
    seq = make_seq(list(range(12)))
    assert not bm.ensure_slots(seq, 12)
    assert seq.block_table == [] and bm.num_free_blocks == 2


def test_shared_prefix_is_reused_with_ref_counts() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    first = make_seq(list(range(10)), "a")
    run_prefill(bm, first)
    second = make_seq([*range(8), 99, 98, 97], "b")
    assert bm.allocate_cached_prefix(second) == 8
    assert second.block_table == first.block_table[:2]
    assert [bm.ref_count(b) for b in second.block_table] == [2, 2]
    assert bm.ensure_slots(second, second.num_tokens)
    bm.check_consistency([first, second])
    bm.free(first)
    bm.free(second)
    bm.check_consistency([])


def test_hash_is_chained_so_equal_blocks_after_different_prefixes_differ() -> None:
    assert block_hash(None, (1, 2)) != block_hash(block_hash(None, (3, 4)), (1, 2))
    bm = BlockManager(num_blocks=8, block_size=2)
    run_prefill(bm, make_seq([3, 4, 1, 2, 5], "a"))
    probe = make_seq([1, 2, 1, 2, 5], "b")
    assert bm.allocate_cached_prefix(probe) == 0  # block (1, 2) exists only after (3, 4)


def test_last_token_is_never_served_from_cache() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    run_prefill(bm, make_seq(list(range(8)), "a"))
    again = make_seq(list(range(8)), "b")
    assert bm.allocate_cached_prefix(again) == 4  # 8 tokens cached, but one must be computed


def test_freed_cached_blocks_survive_until_space_is_needed() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    seq = make_seq([1, 2, 3, 4, 5], "a")
    run_prefill(bm, seq)
    bm.free(seq)
    assert bm.num_free_blocks == 4 and bm.num_cached_blocks == 2
    # one fresh block is taken from the empty ones: the cache is untouched
    other = make_seq([7], "b")
    assert bm.ensure_slots(other, 1)
    assert bm.num_cached_blocks == 2
    assert bm.allocate_cached_prefix(make_seq([1, 2, 3, 4, 9], "c")) == 4


def test_eviction_is_lru_and_tail_first() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    old = make_seq([1, 2, 3, 4, 0], "old")
    run_prefill(bm, old)  # blocks (1,2) (3,4) cached, plus a partial one
    bm.free(old)
    grab = make_seq(list(range(100, 106)), "grab")  # needs 3 blocks: 2 empty + 1 evicted
    assert bm.ensure_slots(grab, 6)
    assert bm.num_cached_blocks == 1
    # the tail block (3,4) went first; the shared-prefix block (1,2) is still there
    assert bm.allocate_cached_prefix(make_seq([1, 2, 3, 4, 5], "p")) == 2


def test_abort_midway_leaks_nothing() -> None:
    bm = BlockManager(num_blocks=6, block_size=2)
    a = make_seq([1, 2, 3, 4, 5, 6, 7], "a")
    run_prefill(bm, a)
    b = make_seq([1, 2, 3, 4, 9, 9, 9], "b")
    bm.allocate_cached_prefix(b)
    assert bm.ensure_slots(b, 5)  # a partial chunk, then the request is aborted
    bm.free(b)
    bm.check_consistency([a])
    bm.free(a)
    bm.check_consistency([])
    assert bm.num_free_blocks == 6
