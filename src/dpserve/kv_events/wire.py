"""KV events ↔ bytes, in the layout of vLLM 0.32.0's `vllm/distributed/kv_events.py`.

A batch is a msgpack array `[ts, [event, ...], data_parallel_rank]` (vLLM's `EventBatch` is an
`array_like` msgspec struct). Each event is a msgpack map tagged by its class name under `"type"`
(vLLM's `KVCacheEvent` structs, map-encoded since vllm-project/vllm#42892):

- `{"type": "BlockStored", "block_hashes", "parent_block_hash", "token_ids", "block_size",
  "lora_id", "medium", "lora_name", "extra_keys"}` (optional fields from `extra_keys` on are omitted
  at their default, None; `extra_keys` is vLLM's since vllm-project/vllm#33304)
- `{"type": "BlockRemoved", "block_hashes", "medium"}`
- `{"type": "AllBlocksCleared"}`

Decoding also takes the older positional layout (`["BlockStored", hashes, parent, ...]`, vLLM
before #42892) and map-shaped batches, and skips event types it does not know, so one gateway
fronts a fleet of mixed vLLM versions. It checks every field's type and bounds: whatever a
publisher sends, a batch decodes to events of the right shape (token ids excepted, see below) or is
a `WireError`. Block hashes are ints
here; vLLM sends sha256 bytes by default (ints with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES) — the
decoder keeps either as given.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

MEDIUM_GPU = "GPU"  # vLLM's medium for the engine's own (first-tier) KV cache
BlockHash = int | bytes

# What a decoder accepts, so that a buggy or hostile publisher costs bounded memory and time.
# One batch is one engine step's events: at 128k batched tokens its BlockStored carry ~128k token
# ids (3-5 bytes each in msgpack) and ~8k 34-byte hashes, under 1 MB. msgpack makes up to one
# Python object per payload byte, so the bound is also the loop's: the worst 1 MiB batch takes
# ~0.25 s to decode and free on this 2-core VM (4 MiB took ~1 s: review_kv_events2 1).
MAX_BATCH_BYTES = 1 << 20
MAX_BLOCK_SIZE = 4096  # tokens per block; vLLM's backends use 1-256 (CPU 128, some 1024 at most)
MAX_HASH_BYTES = 64  # vLLM's hashes are sha256 (32 bytes) or 64-bit ints
MAX_BLOCKS_PER_EVENT = 1 << 16  # a 128k-token step of 16-token blocks is 8k; the index hashes each
_INT64_RANGE = range(-(1 << 63), 1 << 64)  # vLLM's int hashes are unsigned 64-bit; signed too
_INT_ONLY = {int}
_BYTES_ONLY = {bytes}


@dataclass(frozen=True, slots=True)
class BlockStored:
    """Consecutive full blocks became cached: `token_ids` are theirs, `block_size` tokens each."""

    block_hashes: list[BlockHash]
    parent_block_hash: BlockHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = MEDIUM_GPU
    lora_name: str | None = None
    # One entry per block: what vLLM mixed into that block's hash besides its tokens and parent
    # (LoRA name, multimodal identifiers and offsets, cache_salt, prompt-embedding digests), None
    # for a block with nothing. None when no block has any (decoded so even from `[None, ...]`).
    extra_keys: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    """Cached blocks were evicted."""

    block_hashes: list[BlockHash]
    medium: str | None = MEDIUM_GPU


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    """The whole prefix cache was dropped (a reset; our engines also say it when they start)."""


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True, slots=True)
class EventBatch:
    """One engine step's events."""

    ts: float
    events: list[KVEvent] = field(default_factory=list)
    data_parallel_rank: int | None = 0


class WireError(ValueError):
    """A payload that is not a KV event batch."""


def _event_map(event: KVEvent) -> dict[str, Any]:
    if isinstance(event, BlockStored):
        stored: dict[str, Any] = {
            "type": "BlockStored", "block_hashes": event.block_hashes,
            "parent_block_hash": event.parent_block_hash, "token_ids": event.token_ids,
            "block_size": event.block_size, "lora_id": event.lora_id, "medium": event.medium,
            "lora_name": event.lora_name}
        if event.extra_keys is not None:  # msgspec's omit_defaults drops it at None
            stored["extra_keys"] = event.extra_keys
        return stored
    if isinstance(event, BlockRemoved):
        return {"type": "BlockRemoved", "block_hashes": event.block_hashes, "medium": event.medium}
    return {"type": "AllBlocksCleared"}


def encode_batch(batch: EventBatch) -> bytes:
    """The msgpack payload vLLM 0.32 would publish for this batch."""
    body: list[Any] = [batch.ts, [_event_map(e) for e in batch.events]]
    if batch.data_parallel_rank is not None:  # msgspec omit_defaults drops a trailing None
        body.append(batch.data_parallel_rank)
    return msgpack.packb(body, use_bin_type=True)


# Positional field order of the pre-#42892 array layout (after the tag).
_STORED_FIELDS = ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium",
                  "lora_name", "extra_keys")
_REMOVED_FIELDS = ("block_hashes", "medium")


def _fields(raw: Any, names: tuple[str, ...]) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    return dict(zip(names, raw[1:], strict=False))


def _is_hash(value: Any) -> bool:
    t = type(value)
    return (t is int and value in _INT64_RANGE) or (t is bytes and len(value) <= MAX_HASH_BYTES)


def _are_hashes(values: list[Any]) -> bool:
    """All 64-bit ints or all short bytes (checked in C: per element, Python calls cost more than
    the rest of decoding), else one by one."""
    if not values:
        return True
    types = set(map(type, values))
    if types == _BYTES_ONLY:
        return max(map(len, values)) <= MAX_HASH_BYTES
    if types == _INT_ONLY:
        return min(values) in _INT64_RANGE and max(values) in _INT64_RANGE
    return all(map(_is_hash, values))


def _hashes(value: Any, what: str) -> list[BlockHash]:
    if type(value) is not list or len(value) > MAX_BLOCKS_PER_EVENT or not _are_hashes(value):
        raise WireError(f"{what}: block_hashes must be a list of at most {MAX_BLOCKS_PER_EVENT} 64-bit "
                        "ints or short bytes")
    return value


def _extra_keys(value: Any, num_blocks: int) -> list[Any] | None:
    """BlockStored `extra_keys`: None, or one entry per block (what an entry holds is not checked:
    the index only asks whether it is None); None as well when every entry is."""
    if value is None:
        return None
    if type(value) is not list or len(value) != num_blocks:
        raise WireError("BlockStored: extra_keys must be a list with one entry per block")
    return None if value.count(None) == num_blocks else value


def _decode_event(raw: Any) -> KVEvent | None:
    if isinstance(raw, dict):
        tag = raw.get("type")
    elif isinstance(raw, list) and raw:
        tag = raw[0]
    else:
        raise WireError(f"an event must be a map or an array, got {type(raw).__name__}")
    if tag == "BlockStored":
        f = _fields(raw, _STORED_FIELDS)
        hashes, parent = _hashes(f.get("block_hashes"), "BlockStored"), f.get("parent_block_hash")
        tokens, size, lora_id = f.get("token_ids"), f.get("block_size"), f.get("lora_id")
        if type(size) is not int or not 1 <= size <= MAX_BLOCK_SIZE:
            raise WireError(f"BlockStored: block_size must be an int in 1..{MAX_BLOCK_SIZE}")
        if type(tokens) is not list:  # its items are not checked one by one (15 ns a token, ~2x the
            # decode): a non-int only gives keys that match nothing, an unhashable one fails the
            # batch where the index hashes it, which clears that replica's state
            raise WireError("BlockStored: token_ids must be a list")
        if parent is not None and not _is_hash(parent):
            raise WireError("BlockStored: parent_block_hash must be a 64-bit int or short bytes")
        if lora_id is not None and type(lora_id) is not int:
            raise WireError("BlockStored: lora_id must be an int")
        medium, lora_name = f.get("medium"), f.get("lora_name")
        return BlockStored(hashes, parent, tokens, size, lora_id,
                           medium if isinstance(medium, str) else None,
                           lora_name if isinstance(lora_name, str) else None,
                           _extra_keys(f.get("extra_keys"), len(hashes)))
    if tag == "BlockRemoved":
        f = _fields(raw, _REMOVED_FIELDS)
        medium = f.get("medium")
        return BlockRemoved(_hashes(f.get("block_hashes"), "BlockRemoved"),
                            medium if isinstance(medium, str) else None)
    if tag == "AllBlocksCleared":
        return AllBlocksCleared()
    return None  # a newer event type: not ours to interpret


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def decode_batch(payload: bytes) -> EventBatch:
    """Payload → batch; WireError for anything that is not one (or larger than MAX_BATCH_BYTES)."""
    if len(payload) > MAX_BATCH_BYTES:
        raise WireError(f"a batch of {len(payload)} bytes (at most {MAX_BATCH_BYTES})")
    try:  # TypeError: an unhashable map key; RecursionError: nesting deeper than the C stack allows
        with _collector_paused():  # millions of new lists would set off collections that walk them all
            raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as exc:
        raise WireError(f"not msgpack: {str(exc) or type(exc).__name__}") from exc
    if isinstance(raw, dict):
        ts, events, rank = raw.get("ts"), raw.get("events"), raw.get("data_parallel_rank")
    elif isinstance(raw, list) and len(raw) >= 2:
        ts, events, rank = raw[0], raw[1], raw[2] if len(raw) > 2 else None
    else:
        raise WireError("a batch must be [ts, events, data_parallel_rank]")
    if not isinstance(ts, int | float) or type(events) is not list:
        raise WireError("a batch needs a numeric ts and a list of events")
    decoded = [e for e in (_decode_event(r) for r in events) if e is not None]
    return EventBatch(float(ts), decoded, rank if type(rank) is int else None)
