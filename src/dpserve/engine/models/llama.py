"""Llama-family decoder (Llama, SmolLM, Qwen2-style q/k/v bias) over a packed token batch and a
paged KV cache. Built on the meta device; weights come from safetensors, q/k/v and gate/up fused."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from dpserve.engine.attention import AttentionMetadata, paged_attention
from dpserve.engine.models.packed_linear import pack_linears, packed_linear_supported


@dataclass(frozen=True)
class LlamaArgs:
    """The architecture facts the engine needs, read from an HF config.json."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> LlamaArgs:
        cfg: dict[str, Any] = json.loads((model_dir / "config.json").read_text())
        num_heads = int(cfg["num_attention_heads"])
        rope = cfg.get("rope_parameters") or {}  # transformers 5 nests theta here
        theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or num_heads),
            head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // num_heads),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            # Qwen2 configs have biased q/k/v without saying so; Llama says attention_bias.
            attention_bias=bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2")),
        )


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype == torch.float32:  # the common CPU case: skip two no-op casts per norm
            return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))
        x32 = x.float()  # normalise in fp32 like the reference, whatever the weights' dtype
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_tables(args: LlamaArgs, max_len: int, dtype: torch.dtype,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [max_len, head_dim], computed once (same arithmetic as HF's default RoPE)."""
    dim = args.head_dim
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # [L, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [L, D]
    return emb.cos().to(dtype=dtype, device=device), emb.sin().to(dtype=dtype, device=device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, D]; cos/sin [T, 1, D] (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


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
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = apply_rope(q.view(num_tokens, self.num_heads, self.head_dim), meta.cos, meta.sin)  # [T, H, D]
        k = apply_rope(k.view(num_tokens, self.num_kv_heads, self.head_dim), meta.cos, meta.sin)  # [T, KV, D]
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
