"""KvBlockIndex: events → key → replicas, prefix matching, pending decisions, bounds, clears."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from dpserve.gateway.kv_events.index import KvBlockIndex
from dpserve.kv_events.block_hash import chain_keys
from dpserve.kv_events.wire import AllBlocksCleared, BlockHash, BlockRemoved, BlockStored, decode_batch

TOKENS = list(range(100, 112))  # 3 blocks of 4
KEYS = chain_keys(TOKENS, 4)


def stored(hashes: list[BlockHash], parent: int | None, tokens: list[int]) -> BlockStored:
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


@pytest.mark.parametrize("adapter", [{"lora_id": 3}, {"lora_name": "sql"},
                                     {"lora_id": 3, "lora_name": "sql"}])
def test_blocks_of_a_lora_adapter_are_not_hits_for_the_base_model(adapter: dict[str, object]) -> None:
    idx = KvBlockIndex(100, 0.0)
    idx.apply("a", [BlockStored([1, 2, 3], None, TOKENS, 4, **adapter)])  # type: ignore[arg-type]
    assert idx.size == 0 and idx.num_skipped_events == 1


def test_blocks_hashed_with_extra_keys_are_not_hits_for_their_tokens_alone() -> None:
    """vLLM mixes a cache_salt (into the first block), multimodal identifiers or prompt embeddings
    into a block's hash, so into every later block's: from the first such block on, nothing is
    indexed, in the same event or under it. Fed as vLLM publishes it."""
    def vllm_stored(hashes: list[int], parent: int | None, tokens: list[int], extra_keys: list[Any]) -> Any:
        return {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent,
                "token_ids": tokens, "block_size": 4, "lora_id": None, "medium": "GPU", "lora_name": None,
                "extra_keys": extra_keys}

    payload = msgpack.packb([1.0, [
        vllm_stored([1, 2], None, TOKENS[:8], [None, ["img-1", 0]]),
        vllm_stored([3], 2, TOKENS[8:], [None]),  # under the image's block
        vllm_stored([7, 8, 9], None, TOKENS, [["salt"], None, None]),
    ], 0])
    idx = KvBlockIndex(100, 0.0)
    idx.apply("a", decode_batch(payload).events)
    assert idx.match(KEYS, ["a"], now=0.0) == {"a": 1} and idx.num_blocks("a") == 1
    assert idx.num_skipped_events == 3


def test_extra_keys_with_none_for_every_block_index_them_all() -> None:
    """As an event built in-process may carry them (the decoder makes such a list None): no block
    has extra keys, so all are indexed and nothing is counted skipped (was: StopIteration)."""
    idx = KvBlockIndex(100, 0.0)
    idx.apply("a", [BlockStored([1, 2, 3], None, TOKENS, 4, extra_keys=[None, None, None])])
    assert idx.match(KEYS, ["a"], now=0.0) == {"a": 3} and idx.num_skipped_events == 0


def test_a_clear_voids_that_workers_pending_decisions_only() -> None:
    idx = KvBlockIndex(100, 10.0)
    idx.note_routed("a", KEYS, now=0.0)
    idx.note_routed("b", KEYS[:1], now=0.0)  # the first key now points at b
    idx.apply("a", [AllBlocksCleared()] * 3)
    assert idx.match(KEYS, ["a", "b"], now=1.0) == {"a": 0, "b": 1}
    idx.note_routed("a", KEYS[1:], now=2.0)  # decisions after the clear count again
    assert idx.match(KEYS[1:], ["a"], now=3.0) == {"a": 2}


def test_pending_decisions_are_bounded_oldest_first() -> None:
    idx = KvBlockIndex(4, 10.0)  # at most 4 pending keys: one replica's worth of the index
    idx.note_routed("a", KEYS, now=0.0)
    idx.note_routed("b", [101, 102], now=1.0)  # unexpired, yet the oldest key goes
    assert len(idx._pending) == 4
    assert idx.match(KEYS, ["a"], now=2.0) == {"a": 0}  # its head was the oldest
    assert idx.match(KEYS[1:], ["a"], now=2.0) == {"a": 2}
    assert idx.match([101, 102], ["b"], now=2.0) == {"b": 2}
    long_prompt = list(range(1, 11))
    idx.note_routed("c", long_prompt, now=3.0)  # longer than the bound: its head is kept
    assert idx.match(long_prompt, ["c"], now=4.0) == {"c": 4}


def test_a_dropped_worker_leaves_no_per_worker_state_and_its_decisions_stay_void() -> None:
    idx = KvBlockIndex(100, 10.0)
    idx.note_routed("a", KEYS, now=0.0)
    idx.apply("a", [AllBlocksCleared(), stored([1], None, TOKENS[:4])])
    idx.apply("odd", [BlockStored([7], None, TOKENS[:2], 2)])  # another block size: logged once
    idx.note_routed("a", KEYS, now=1.0)
    for worker in ("a", "odd"):
        idx.drop_worker(worker)
    assert idx._epoch == {} and idx._odd_sizes_logged == set() and idx._workers == {}
    idx.apply("a", [AllBlocksCleared()])  # the same id again: what was decided before stays void
    assert idx.match(KEYS, ["a"], now=2.0) == {"a": 0}
    idx.note_routed("a", KEYS[:1], now=2.0)
    assert idx.match(KEYS, ["a"], now=3.0) == {"a": 1}
