"""Llama-family decoder (Llama, SmolLM, Qwen2-style q/k/v bias) over a packed token batch and a
paged KV cache. Built on the meta device; weights come from safetensors, q/k/v and gate/up fused."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from dpserve.engine.attention import AttentionMetadata, paged_attention
from dpserve.engine.models.llama_args import LlamaArgs
from dpserve.engine.models.packed_linear import pack_linears, packed_linear_supported


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype == torch.float32:  # the common CPU case: skip two no-op casts per norm
            # sum + div_ is how ATen computes mean (bit-identical), without mean's scalar casts; at
            # decode sizes each op's fixed cost is the whole cost
            ms = (x * x).sum(-1, keepdim=True).div_(x.shape[-1]).add_(self.eps).rsqrt_()
            return self.weight * (x * ms)
        x32 = x.float()  # normalise in fp32 like the reference, whatever the weights' dtype
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_tables(args: LlamaArgs, max_len: int, dtype: torch.dtype,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and *signed* sin tables [max_len, head_dim], computed once (HF's default RoPE arithmetic).

    The sin table's first half is negated so that rotate_half(x) * sin == x.roll(D/2) * signed_sin:
    one roll instead of two slices, a neg and a cat per call, with bit-identical results.
    """
    dim = args.head_dim
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # [L, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [L, D]
    sin = emb.sin()
    sin[:, : dim // 2].neg_()
    return emb.cos().to(dtype=dtype, device=device), sin.to(dtype=dtype, device=device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, D]; cos/signed_sin [T, 1, D] from rope_tables (rotate-half convention)."""
    return (x * cos).add_(x.roll(x.shape[-1] // 2, dims=-1).mul_(signed_sin))


class Attention(nn.Module):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = args.num_heads, args.num_kv_heads, args.head_dim
        self.q_size = args.num_heads * args.head_dim
        self.kv_size = args.num_kv_heads * args.head_dim
        # One GEMM instead of three: fewer kernel launches and one pass over the activations.
        self.qkv_proj = nn.Linear(args.hidden_size, self.q_size + 2 * self.kv_size, bias=args.attention_bias)
        self.o_proj = nn.Linear(self.q_size, args.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, meta: AttentionMetadata,
                kv_cache: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        num_tokens = x.shape[0]
        qkv = self.qkv_proj(x)  # [T, (H + 2*KV) * D]
        qk, v = qkv.split([self.q_size + self.kv_size, self.kv_size], dim=-1)
        # q and k are adjacent in the fused output: rotate all their heads in one pass
        qk = apply_rope(qk.view(num_tokens, self.num_heads + self.num_kv_heads, self.head_dim),
                        meta.cos, meta.sin)  # [T, H + KV, D]
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)  # [T, H, D], [T, KV, D]
        v = v.view(num_tokens, self.num_kv_heads, self.head_dim)  # [T, KV, D]
        out = paged_attention(q, k, v, kv_cache, meta)  # [T, H, D]
        return self.o_proj(out.view(num_tokens, self.q_size))


class MLP(nn.Module):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.intermediate_size = args.intermediate_size
        self.gate_up_proj = nn.Linear(args.hidden_size, 2 * args.intermediate_size, bias=False)  # fused
        self.down_proj = nn.Linear(args.intermediate_size, args.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.intermediate_size, dim=-1)  # [T, I] each
        # in place on the fused output: no extra [T, I] temporaries (they cost at prefill sizes)
        return self.down_proj(F.silu(gate, inplace=True).mul_(up))


class DecoderLayer(nn.Module):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.self_attn = Attention(args)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.mlp = MLP(args)

    def forward(self, x: torch.Tensor, meta: AttentionMetadata,
                kv_cache: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), meta, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """forward(): packed token ids [T] → final hidden states [T, hidden]; logits() on a subset."""

    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(args) for _ in range(args.num_layers))
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor, meta: AttentionMetadata,
                kv_caches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        x = self.embed_tokens(input_ids)  # [T, hidden]
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, meta, kv_cache)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()  # [S, vocab]; only rows that sample reach here


def _fused_weights(tensors: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """HF checkpoint names → this module's names, concatenating q/k/v and gate/up."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        key = name.removeprefix("model.")
        if ".self_attn.q_proj." in key or ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue
        if ".mlp.gate_proj." in key or ".mlp.up_proj." in key:
            continue
        out[key] = tensor
    for i in range(num_layers):
        p = f"model.layers.{i}"
        for kind in ("weight", "bias"):
            if f"{p}.self_attn.q_proj.{kind}" in tensors:
                out[f"layers.{i}.self_attn.qkv_proj.{kind}"] = torch.cat(
                    [tensors[f"{p}.self_attn.{n}_proj.{kind}"] for n in ("q", "k", "v")])
        out[f"layers.{i}.mlp.gate_up_proj.weight"] = torch.cat(
            [tensors[f"{p}.mlp.gate_proj.weight"], tensors[f"{p}.mlp.up_proj.weight"]])
    return out


def load_llama(model_dir: Path, dtype: torch.dtype, device: torch.device) -> LlamaModel:
    """Build on the meta device (no init cost), then assign the checkpoint tensors."""
    args = LlamaArgs.from_model_dir(model_dir)
    with torch.device("meta"):
        model = LlamaModel(args)
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt", device="cpu") as f:  # memory-mapped reads
            for name in f.keys():  # noqa: SIM118 - safe_open is not a dict
                if "rotary_emb" not in name:
                    tensors[name] = f.get_tensor(name)
    state = {k: v.to(device=device, dtype=dtype) for k, v in _fused_weights(tensors, args.num_layers).items()}
    if "lm_head.weight" not in state:
        if not args.tie_word_embeddings:
            raise ValueError(f"{model_dir}: checkpoint has no lm_head.weight and embeddings are not tied")
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if packed_linear_supported(device, dtype):
        pack_linears(model)
    return model.eval()
