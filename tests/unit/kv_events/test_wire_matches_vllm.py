"""Our KV event bytes against vLLM 0.32.0's message definitions (decoded and encoded by msgspec)."""

from __future__ import annotations

import msgpack
import msgspec
import pytest

from dpserve.kv_events import wire
from tests.unit.kv_events import vllm_0_32_layout as vllm

BATCH = wire.EventBatch(1700000000.5, [
    wire.BlockStored([11, 2**64 - 1], None, list(range(32)), 16),
    wire.BlockStored([12], 2**64 - 1, list(range(16)), 16),
    wire.BlockRemoved([11, 12]),
    wire.AllBlocksCleared(),
])


def test_vllm_decodes_our_batch_field_by_field() -> None:
    got = msgspec.msgpack.decode(wire.encode_batch(BATCH), type=vllm.KVEventBatch)
    assert got.ts == 1700000000.5 and got.data_parallel_rank == 0
    stored, second, removed, cleared = got.events
    assert isinstance(stored, vllm.BlockStored) and isinstance(second, vllm.BlockStored)
    assert (stored.block_hashes, stored.parent_block_hash, stored.token_ids, stored.block_size,
            stored.lora_id, stored.medium, stored.lora_name) == ([11, 2**64 - 1], None, list(range(32)), 16,
                                                                 None, "GPU", None)
    assert second.parent_block_hash == 2**64 - 1
    assert isinstance(removed, vllm.BlockRemoved) and removed.block_hashes == [11, 12]
    assert removed.medium == "GPU"
    assert isinstance(cleared, vllm.AllBlocksCleared)


def test_our_bytes_equal_vllms_for_the_same_batch() -> None:
    """Same keys, same order, same msgpack types: byte for byte what vLLM's publisher sends."""
    theirs = vllm.KVEventBatch(1700000000.5, [
        vllm.BlockStored([11, 2**64 - 1], None, list(range(32)), 16, None, "GPU", None),
        vllm.BlockStored([12], 2**64 - 1, list(range(16)), 16, None, "GPU", None),
        vllm.BlockRemoved([11, 12], "GPU"),
        vllm.AllBlocksCleared(),
    ], 0)
    assert wire.encode_batch(BATCH) == msgspec.msgpack.encode(theirs)


def test_we_decode_what_vllm_encodes_including_newer_optional_fields() -> None:
    theirs = vllm.KVEventBatch(3.0, [
        vllm.BlockStored([b"\x01" * 32], None, [5] * 16, 16, None, "GPU", None, extra_keys=[None],
                         group_idx=0, kv_cache_spec_kind="full_attention", session_id="s"),
        vllm.BlockRemoved([b"\x01" * 32], "GPU", group_idx=0),
        vllm.AllBlocksCleared(),
    ], 1)
    batch = wire.decode_batch(msgspec.msgpack.encode(theirs))
    assert batch.data_parallel_rank == 1
    assert batch.events == [wire.BlockStored([b"\x01" * 32], None, [5] * 16, 16, None, "GPU", None),
                            wire.BlockRemoved([b"\x01" * 32], "GPU"), wire.AllBlocksCleared()]


def test_extra_keys_come_through_per_block_and_only_when_a_block_has_some() -> None:
    """vLLM's per-block extra hash inputs (vllm-project/vllm#33304): kept as sent, tuples as lists;
    `[None, ...]` (what vLLM sends for plain blocks) is None; ours encode as vLLM's do."""
    theirs = vllm.KVEventBatch(1.0, [
        vllm.BlockStored([1, 2], None, [5] * 32, 16, None, "GPU", None, extra_keys=[None, ("salt",)]),
        vllm.BlockStored([3], 2, [6] * 16, 16, None, "GPU", None, extra_keys=[None]),
    ], 0)
    salted, plain = wire.decode_batch(msgspec.msgpack.encode(theirs)).events
    assert isinstance(salted, wire.BlockStored) and salted.extra_keys == [None, ["salt"]]
    assert isinstance(plain, wire.BlockStored) and plain.extra_keys is None
    ours = wire.EventBatch(1.0, [wire.BlockStored([1, 2], None, [5] * 32, 16, extra_keys=[None, ["salt"]])])
    assert wire.encode_batch(ours) == msgspec.msgpack.encode(vllm.KVEventBatch(1.0, theirs.events[:1], 0))


def test_we_decode_the_positional_layout_of_vllm_before_42892() -> None:
    payload = msgpack.packb([2.0, [["BlockStored", [7], None, [1, 2], 2, None, "GPU"],
                                   ["BlockRemoved", [7], "GPU"], ["AllBlocksCleared"],
                                   ["SomethingNew", 1]]])
    assert wire.decode_batch(payload).events == [wire.BlockStored([7], None, [1, 2], 2, None, "GPU"),
                                                 wire.BlockRemoved([7], "GPU"), wire.AllBlocksCleared()]
    with_extra_keys = msgpack.packb([2.0, [["BlockStored", [7, 8], None, [1, 2, 3, 4], 2, None, "GPU", None,
                                            [["salt"], None]]]])
    [event] = wire.decode_batch(with_extra_keys).events
    assert isinstance(event, wire.BlockStored) and event.extra_keys == [["salt"], None]


@pytest.mark.parametrize("payload", [b"\xc1", msgpack.packb({"x": 1}), msgpack.packb([1.0]),
                                     msgpack.packb([1.0, [{"type": "BlockStored", "block_hashes": 3}]]),
                                     msgpack.packb([1.0, [5]])])
def test_garbage_is_a_wire_error(payload: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_batch(payload)
