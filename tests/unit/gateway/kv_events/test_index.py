"""KvBlockIndex: events → key → replicas, prefix matching, pending decisions, bounds, clears."""

from __future__ import annotations

from dpserve.gateway.kv_events.index import KvBlockIndex
from dpserve.kv_events.block_hash import chain_keys
from dpserve.kv_events.wire import AllBlocksCleared, BlockRemoved, BlockStored

TOKENS = list(range(100, 112))  # 3 blocks of 4
KEYS = chain_keys(TOKENS, 4)


def stored(hashes: list[int], parent: int | None, tokens: list[int]) -> BlockStored:
    return BlockStored(hashes, parent, tokens, 4)


def test_keys_come_from_tokens_not_from_the_replicas_own_hashes() -> None:
    idx = KvBlockIndex(100, 0.0)
    idx.apply("a", [stored([901, 902], None, TOKENS[:8]), stored([903], 902, TOKENS[8:])])
    idx.apply("b", [stored([5], None, TOKENS[:4])])  # another process-random hash, same block
    assert idx.block_size == 4
    assert idx.match(KEYS, ["a", "b", "c"], now=0.0) == {"a": 3, "b": 1, "c": 0}
    idx.apply("a", [BlockRemoved([902])])
    assert idx.match(KEYS, ["a", "b"], now=0.0) == {"a": 1, "b": 1}


def test_a_block_under_an_unknown_parent_is_skipped() -> None:
    idx = KvBlockIndex(100, 0.0)
    idx.apply("a", [stored([903], 777, TOKENS[8:])])
    assert idx.size == 0 and idx.num_skipped_events == 1
    assert idx.is_tracked("a")


def test_cleared_and_dropped_workers_hold_nothing() -> None:
    idx = KvBlockIndex(100, 10.0)
    idx.apply("a", [stored([1, 2, 3], None, TOKENS)])
    idx.note_routed("a", KEYS, now=0.0)
    idx.apply("a", [AllBlocksCleared()])
    assert idx.match(KEYS, ["a"], now=1.0) == {"a": 0} and idx.size == 0
    idx.apply("b", [stored([1], None, TOKENS[:4])])
    idx.drop_worker("b")
    assert not idx.is_tracked("b") and idx.size == 0


def test_pending_decisions_count_until_they_expire() -> None:
    idx = KvBlockIndex(100, 2.0)
    idx.note_routed("a", KEYS[:2], now=10.0)
    assert idx.match(KEYS, ["a", "b"], now=11.0) == {"a": 2, "b": 0}
    assert idx.match(KEYS, ["a", "b"], now=12.5) == {"a": 0, "b": 0}
    idx.note_routed("b", [KEYS[0]], now=13.0)  # drops the expired entries
    assert list(idx.match(KEYS, ["a", "b"], now=13.0).values()) == [0, 1]


def test_memory_per_worker_is_bounded_oldest_first() -> None:
    idx = KvBlockIndex(2, 0.0)
    idx.apply("a", [stored([1, 2, 3], None, TOKENS)])
    assert idx.num_blocks("a") == 2 and idx.size == 2
    assert idx.match(KEYS, ["a"], now=0.0) == {"a": 0}  # the first block was dropped


def test_one_replica_with_another_block_size_does_not_blind_the_others() -> None:
    """The fleet's block size is most replicas'; the odd one is untracked (the tree routes to it),
    whichever published first, and its restart (a clear) lets it come back with the fleet's size."""
    idx = KvBlockIndex(100, 0.0)
    idx.apply("odd", [BlockStored([7], None, TOKENS[:1], 1)])  # first, and alone: its size rules
    assert idx.block_size == 1 and idx.is_tracked("odd")
    idx.apply("a", [stored([1, 2, 3], None, TOKENS)])
    idx.apply("b", [stored([1], None, TOKENS[:4])])
    assert idx.block_size == 4
    assert idx.is_tracked("a") and idx.is_tracked("b") and not idx.is_tracked("odd")
    assert idx.match(KEYS, ["a", "b"], now=0.0) == {"a": 3, "b": 1}
    idx.apply("odd", [AllBlocksCleared(), stored([9], None, TOKENS[:4])])  # restarted with size 4
    assert idx.is_tracked("odd") and idx.match(KEYS, ["odd"], now=0.0) == {"odd": 1}


def test_blocks_of_a_lora_adapter_are_not_hits_for_the_base_model() -> None:
    idx = KvBlockIndex(100, 0.0)
    idx.apply("a", [BlockStored([1, 2, 3], None, TOKENS, 4, lora_id=3)])
    assert idx.size == 0 and idx.num_skipped_events == 1


def test_a_clear_voids_that_workers_pending_decisions_only() -> None:
    idx = KvBlockIndex(100, 10.0)
    idx.note_routed("a", KEYS, now=0.0)
    idx.note_routed("b", KEYS[:1], now=0.0)  # the first key now points at b
    idx.apply("a", [AllBlocksCleared()] * 3)
    assert idx.match(KEYS, ["a", "b"], now=1.0) == {"a": 0, "b": 1}
    idx.note_routed("a", KEYS[1:], now=2.0)  # decisions after the clear count again
    assert idx.match(KEYS[1:], ["a"], now=3.0) == {"a": 2}
