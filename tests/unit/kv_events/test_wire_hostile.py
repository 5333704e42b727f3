"""decode_batch against a buggy or hostile publisher: whatever the bytes, well-typed events or a
WireError — never another exception, never a value the index cannot use as a key."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from dpserve.kv_events import wire


def stored(**fields: Any) -> dict[str, Any]:
    event = {"type": "BlockStored", "block_hashes": [1], "parent_block_hash": None,
             "token_ids": list(range(16)), "block_size": 16}
    event.update(fields)
    return event


def batch(*events: Any) -> bytes:
    return msgpack.packb([1.0, list(events)])


@pytest.mark.parametrize("payload", [
    b"\x81\x91\x01\x01",  # a map whose key is an array (msgpack raises TypeError)
    b"\x91" * 100_000 + b"\x01",  # nesting deeper than the unpacker's stack
    batch(stored(block_hashes=[[1, 2]])), batch(stored(block_hashes=[{"a": 1}])),
    batch(stored(block_hashes=[None])), batch(stored(block_hashes=[1.5])), batch(stored(block_hashes=["x"])),
    batch(stored(block_hashes=[True])), batch(stored(block_hashes=[b"x" * 65])),
    batch(stored(parent_block_hash=[1])), batch(stored(parent_block_hash=2.5)),
    batch(stored(token_ids="x")), batch(stored(token_ids={"a": 1})),
    batch(stored(block_size=0)), batch(stored(block_size=-1)), batch(stored(block_size=True)),
    batch(stored(block_size=wire.MAX_BLOCK_SIZE + 1)), batch(stored(block_size=16.0)),
    batch(stored(lora_id="adapter")),
    batch(stored(extra_keys="salt")), batch(stored(extra_keys=[None, None])),  # one entry per block
    batch({"type": "BlockRemoved", "block_hashes": [[1]]}), batch({"type": "BlockRemoved"}),
    msgpack.packb(["x", []]), batch(5),
])
def test_a_malformed_batch_is_a_wire_error(payload: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_batch(payload)


def test_an_oversized_batch_is_refused_before_it_is_decoded() -> None:
    payload = msgpack.packb([1.0, [[]] * (wire.MAX_BATCH_BYTES + 1)])
    with pytest.raises(wire.WireError, match="bytes"):
        wire.decode_batch(payload)


def test_the_bounds_keep_what_vllm_publishes() -> None:
    """sha256 hashes, unsigned 64-bit int hashes, and the largest step's worth of tokens decode."""
    tokens = list(range(128 * 1024))
    hashes = [bytes(32)] * (len(tokens) // 16)
    events = wire.decode_batch(batch(stored(block_hashes=hashes, token_ids=tokens),
                                     stored(block_hashes=[(1 << 64) - 1], parent_block_hash=(1 << 64) - 2),
                                     {"type": "BlockRemoved", "block_hashes": [bytes(32)], "medium": None}))
    assert len(events.events) == 3 and events.events[0].block_hashes == hashes  # type: ignore[union-attr]
