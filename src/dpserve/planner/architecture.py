"""ModelArch: the architecture facts the planner needs, read from an HF config.json (dense, MoE, MLA)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dpserve.config import short_repr

# Every dimension and count of a config.json is at most this: 40× the largest in any published
# model (vocabularies ~256k), and small enough that no product the formulas form overflows a float.
MAX_SIZE = 10**7


class ArchitectureError(ValueError):
    """A config.json the planner cannot read; the message names the key."""


@dataclass(frozen=True)
class ModelArch:
    """Shapes only: parameter counts, KV sizes and FLOPs all follow from these (see formulas.py)."""

    name: str
    hidden_size: int
    intermediate_size: int  # the dense MLP's (dense layers of an MoE model too)
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v biases (Qwen2)
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3)
    # Mixture of experts (num_experts == 0: dense)
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    num_shared_experts: int = 0
    first_dense_layers: int = 0  # leading layers with a dense MLP (DeepSeek's first_k_dense_replace)
    # Multi-head latent attention (DeepSeek); kv_lora_rank == 0: ordinary (grouped-query) attention
    kv_lora_rank: int = 0
    q_lora_rank: int = 0  # 0: q projected directly
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_dense_layers if self.is_moe else 0


def arch_from_hf_config(cfg: Mapping[str, Any], name: str) -> ModelArch:
    """Read an HF config.json dict (Llama, Qwen2/3, Mistral, Mixtral, Qwen-MoE, DeepSeek-V2/V3)."""
    if not isinstance(cfg, Mapping):
        raise ArchitectureError(f"{name}: config.json must be a JSON object")
    text = cfg.get("text_config")
    if isinstance(text, Mapping) and "hidden_size" not in cfg:  # multimodal wrappers nest the LLM
        cfg = text
    hidden = _int(cfg, "hidden_size", name)
    heads = _int(cfg, "num_attention_heads", name)
    if heads < 1:  # before hidden // heads below
        raise ArchitectureError(f"{name}: num_attention_heads must be >= 1, got {heads}")
    num_experts = _int(cfg, "n_routed_experts", name, default=None) or _int(
        cfg, "num_local_experts", name, default=None) or _int(cfg, "num_experts", name, default=0)
    model_type = cfg.get("model_type", "")
    if not isinstance(model_type, str):
        raise ArchitectureError(f"{name}: config.json 'model_type' must be a string, "
                                f"got {short_repr(model_type)}")
    arch = ModelArch(
        name=name, hidden_size=hidden,
        intermediate_size=_int(cfg, "intermediate_size", name),
        num_layers=_int(cfg, "num_hidden_layers", name),
        num_heads=heads,
        num_kv_heads=_int(cfg, "num_key_value_heads", name, default=heads),
        # absent, null or 0: hidden // heads
        head_dim=_int(cfg, "head_dim", name, default=None) or hidden // heads,
        vocab_size=_int(cfg, "vocab_size", name),
        # transformers' own default when config.json leaves it out: True for Gemma's classes
        tie_word_embeddings=_bool(cfg, "tie_word_embeddings", name, default=model_type.startswith("gemma")),
        attention_bias=_bool(cfg, "attention_bias", name, default=model_type == "qwen2"),
        qk_norm=model_type.startswith("qwen3"),
        num_experts=num_experts,
        experts_per_token=_int(cfg, "num_experts_per_tok", name, default=0) if num_experts else 0,
        moe_intermediate_size=(_int(cfg, "moe_intermediate_size", name, default=None)
                               or _int(cfg, "intermediate_size", name)) if num_experts else 0,
        num_shared_experts=_int(cfg, "n_shared_experts", name, default=0) if num_experts else 0,
        first_dense_layers=_int(cfg, "first_k_dense_replace", name, default=0) if num_experts else 0,
        kv_lora_rank=_int(cfg, "kv_lora_rank", name, default=0),
        q_lora_rank=_int(cfg, "q_lora_rank", name, default=0),
        qk_rope_head_dim=_int(cfg, "qk_rope_head_dim", name, default=0),
        qk_nope_head_dim=_int(cfg, "qk_nope_head_dim", name, default=0),
        v_head_dim=_int(cfg, "v_head_dim", name, default=0),
    )
    _check(arch)
    return arch


def _int(cfg: Mapping[str, Any], key: str, name: str, default: int | str | None = "required") -> Any:
    value = cfg.get(key)
    if value is None:
        if default == "required":
            raise ArchitectureError(f"{name}: config.json has no {key!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchitectureError(f"{name}: config.json {key!r} must be an integer, got {short_repr(value)}")
    return value


def _bool(cfg: Mapping[str, Any], key: str, name: str, default: bool) -> bool:
    """A JSON true/false (absent or null: `default`); a string "false" is not False."""
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ArchitectureError(f"{name}: config.json {key!r} must be true or false, got {short_repr(value)}")
    return value


# Fields that must be >= 1, and those that may be 0 (absent: dense, no MLA, no low-rank q).
_POSITIVE = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
             "vocab_size")
_COUNTS = ("num_experts", "experts_per_token", "moe_intermediate_size", "num_shared_experts",
           "first_dense_layers", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
           "v_head_dim")
# The config.json key behind a field, where the names differ (for the messages).
_KEYS = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
         "num_kv_heads": "num_key_value_heads", "num_experts": "n_routed_experts (num_local_experts)",
         "experts_per_token": "num_experts_per_tok", "num_shared_experts": "n_shared_experts",
         "first_dense_layers": "first_k_dense_replace"}


def _check(a: ModelArch) -> None:
    for field in (*_POSITIVE, *_COUNTS):
        low, value = (1 if field in _POSITIVE else 0), getattr(a, field)
        if not low <= value <= MAX_SIZE:  # a negative count would make the formulas' sums absurd
            raise ArchitectureError(f"{a.name}: {_KEYS.get(field, field)} must be in {low}..{MAX_SIZE}, "
                                    f"got {short_repr(value)}")
    if a.num_heads % a.num_kv_heads:
        raise ArchitectureError(f"{a.name}: num_attention_heads ({a.num_heads}) is not a multiple of "
                                f"num_key_value_heads ({a.num_kv_heads})")
    if a.is_moe and not 1 <= a.experts_per_token <= a.num_experts:
        raise ArchitectureError(f"{a.name}: num_experts_per_tok must be in 1..{a.num_experts}")
    if a.is_moe and not 0 <= a.first_dense_layers < a.num_layers:
        raise ArchitectureError(f"{a.name}: first_k_dense_replace must be < num_hidden_layers")
    if a.is_mla and min(a.qk_rope_head_dim, a.qk_nope_head_dim, a.v_head_dim) < 1:
        raise ArchitectureError(f"{a.name}: an MLA config (kv_lora_rank) needs qk_rope_head_dim, "
                                "qk_nope_head_dim and v_head_dim")
