"""BlockManager's KV events: stored when full blocks are registered, removed on eviction, cleared first."""

from __future__ import annotations

from dpserve.engine.block_manager import BlockManager
from dpserve.engine.sequence import Sequence
from dpserve.kv_events.block_hash import chain_keys
from dpserve.kv_events.wire import AllBlocksCleared, BlockRemoved, BlockStored
from dpserve.serving.engine_client import SamplingParams


def computed(bm: BlockManager, tokens: list[int]) -> Sequence:
    seq = Sequence("s", tokens, SamplingParams())
    bm.allocate_cached_prefix(seq)
    assert bm.ensure_slots(seq, len(tokens))
    seq.num_computed_tokens = len(tokens)
    bm.commit_full_blocks(seq)
    return seq


def test_events_say_what_the_cache_holds() -> None:
    bm = BlockManager(4, 2, record_events=True)
    assert bm.take_events() == [AllBlocksCleared()]  # a new cache is empty
    a = computed(bm, [1, 2, 3, 4, 5])
    ka = chain_keys([1, 2, 3, 4], 2)
    assert bm.take_events() == [BlockStored(ka, None, [1, 2, 3, 4], 2)]
    assert bm.take_events() == []
    bm.free(a)
    b = computed(bm, [1, 2, 3, 4, 9, 9])  # reuses 2 cached blocks, stores the third under its parent
    assert bm.take_events() == [BlockStored(chain_keys([1, 2, 3, 4, 9, 9], 2)[2:], ka[1], [9, 9], 2)]
    bm.free(b)
    computed(bm, [7, 7, 8, 8, 6, 6, 5])  # needs 4 blocks: evicts the LRU cached ones (tail first)
    events = bm.take_events()
    removed = [h for e in events if isinstance(e, BlockRemoved) for h in e.block_hashes]
    assert removed == [chain_keys([1, 2, 3, 4, 9, 9], 2)[2], ka[1], ka[0]]


def test_keys_are_the_block_hashes_the_engine_uses() -> None:
    bm = BlockManager(8, 4, record_events=True)
    seq = computed(bm, list(range(13)))
    stored = bm.take_events()[1]
    assert isinstance(stored, BlockStored) and stored.block_hashes == seq.block_hashes


def test_nothing_is_recorded_unless_asked() -> None:
    bm = BlockManager(4, 2)
    computed(bm, [1, 2, 3])
    assert bm.take_events() == []
