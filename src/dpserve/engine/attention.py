"""Attention over the paged KV cache for a packed batch: decodes first, then prefill segments."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PrefillSegment:
    """Rows [start, end) of the packed batch: one sequence's prefill chunk."""

    start: int
    end: int
    context_slots: torch.Tensor | None  # [L] cache slots of the whole context; None = no cached prefix
    mask: torch.Tensor | None  # [n, L] bool, True = may attend; None = plain causal


@dataclass(frozen=True)
class AttentionMetadata:
    """Per-step tensors shared by every layer (built once by the model runner)."""

    cos: torch.Tensor  # [T, 1, D]
    sin: torch.Tensor  # [T, 1, D], first half negated (see models.llama.rope_tables)
    slot_mapping: torch.Tensor  # [T] cache slot (block * block_size + offset) of each new token
    num_decodes: int  # rows [0, num_decodes) are single-token steps
    decode_slots: torch.Tensor | None  # [Bd * L] slots of each decode's padded context
    decode_mask: torch.Tensor | None  # [Bd, 1, 1, L] bool; None = one decode, L its exact context
    prefills: tuple[PrefillSegment, ...]


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    kv_cache: tuple[torch.Tensor, torch.Tensor], meta: AttentionMetadata) -> torch.Tensor:
    """q [T, H, D], k/v [T, KV, D] for the new tokens → output [T, H, D]; also writes k/v to the cache."""
    k_cache, v_cache = kv_cache  # [num_blocks, block_size, KV, D]
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    k_flat = k_cache.view(-1, num_kv_heads, head_dim)  # [slots, KV, D]
    v_flat = v_cache.view(-1, num_kv_heads, head_dim)
    k_flat.index_copy_(0, meta.slot_mapping, k)
    v_flat.index_copy_(0, meta.slot_mapping, v)
    if not meta.prefills:  # decode-only step (steady state): no output buffer to assemble
        return _decode_attention(q, k_flat, v_flat, meta)
    out = torch.empty_like(q)
    if meta.num_decodes:
        out[:meta.num_decodes] = _decode_attention(q[:meta.num_decodes], k_flat, v_flat, meta)
    for seg in meta.prefills:
        out[seg.start:seg.end] = _prefill_attention(q, k, v, k_flat, v_flat, seg)
    return out


def _decode_attention(q: torch.Tensor, k_flat: torch.Tensor, v_flat: torch.Tensor,
                      meta: AttentionMetadata) -> torch.Tensor:
    assert meta.decode_slots is not None
    batch, num_heads, head_dim = q.shape
    num_kv_heads = k_flat.shape[1]
    # One index_select gathers every decode's blocks at once (no per-sequence Python loop).
    k = k_flat.index_select(0, meta.decode_slots).view(batch, -1, num_kv_heads, head_dim)  # [B, L, KV, D]
    v = v_flat.index_select(0, meta.decode_slots).view(batch, -1, num_kv_heads, head_dim)
    # GQA without repeating K/V: the G query heads of one KV head become G query rows of it.
    q_grouped = q.reshape(batch, num_kv_heads, num_heads // num_kv_heads, head_dim)  # [B, KV, G, D]
    out = F.scaled_dot_product_attention(q_grouped, k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=meta.decode_mask)  # [B, KV, G, D]
    return out.reshape(batch, num_heads, head_dim)


def _prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_flat: torch.Tensor,
                       v_flat: torch.Tensor, seg: PrefillSegment) -> torch.Tensor:
    qs = q[seg.start:seg.end].transpose(0, 1).unsqueeze(0)  # [1, H, n, D]
    if seg.context_slots is None:  # fresh prompt: its own K/V are the whole context
        ks = k[seg.start:seg.end].transpose(0, 1).unsqueeze(0)  # [1, KV, n, D]
        vs = v[seg.start:seg.end].transpose(0, 1).unsqueeze(0)
        out = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True)
    else:  # continuing after a cached prefix or an earlier chunk: gather the context from the cache
        ks = k_flat.index_select(0, seg.context_slots).transpose(0, 1).unsqueeze(0)  # [1, KV, L, D]
        vs = v_flat.index_select(0, seg.context_slots).transpose(0, 1).unsqueeze(0)
        out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=seg.mask, enable_gqa=True)
    return out[0].transpose(0, 1)  # [n, H, D]
