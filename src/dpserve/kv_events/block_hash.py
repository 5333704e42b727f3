"""The chained block key: one deterministic function shared by the engine's prefix cache and the gateway.

A block's key covers every token before it (the parent's key is hashed in), so equal keys mean
equal prefixes. Python's `hash` of a tuple of ints does not depend on PYTHONHASHSEED (only str and
bytes hashes are salted), and the root is a constant rather than `None` (whose hash is its address
before Python 3.12), so every process — each replica, each gateway — computes the same key for the
same tokens. vLLM's own block hashes may differ per process (its root hash is seeded); gateways
therefore key their index on this function of the token ids that vLLM's BlockStored events carry.
"""

from __future__ import annotations

from collections.abc import Sequence

ROOT_KEY = 0x6470736572766531  # b"dpserve1": the "parent" of a sequence's first block
_MASK64 = (1 << 64) - 1  # vLLM publishes int block hashes as unsigned 64-bit


def chain_key(parent: int | None, tokens: tuple[int, ...]) -> int:
    """Key of the block holding `tokens` after the block keyed `parent` (None: the first block)."""
    return hash((ROOT_KEY if parent is None else parent, tokens)) & _MASK64


def chain_keys(token_ids: Sequence[int], block_size: int, parent: int | None = None) -> list[int]:
    """Keys of the full blocks of `token_ids` (a trailing partial block has none)."""
    keys = []
    prev = parent
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        prev = chain_key(prev, tuple(token_ids[start:start + block_size]))
        keys.append(prev)
    return keys
