"""`--model` for the planner: a built-in architecture name, the bundled model, or a config.json / HF dir.

The built-in table copies the architecture keys of each model's published Hugging Face
config.json (huggingface.co/<repo>/blob/main/config.json); only shapes, never weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dpserve.planner.architecture import ArchitectureError, ModelArch, arch_from_hf_config

_LLAMA3 = {"vocab_size": 128256, "tie_word_embeddings": False, "model_type": "llama"}
_QWEN3 = {"vocab_size": 151936, "tie_word_embeddings": False, "model_type": "qwen3", "head_dim": 128}

BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-3.1-8B
    "llama-3.1-8b": {**_LLAMA3, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8},
    # meta-llama/Llama-3.1-70B
    "llama-3.1-70b": {**_LLAMA3, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                      "num_attention_heads": 64, "num_key_value_heads": 8},
    # meta-llama/Llama-3.1-405B
    "llama-3.1-405b": {**_LLAMA3, "hidden_size": 16384, "intermediate_size": 53248,
                       "num_hidden_layers": 126, "num_attention_heads": 128, "num_key_value_heads": 8},
    # Qwen/Qwen3-14B
    "qwen3-14b": {**_QWEN3, "hidden_size": 5120, "intermediate_size": 17408, "num_hidden_layers": 40,
                  "num_attention_heads": 40, "num_key_value_heads": 8},
    # Qwen/Qwen3-32B
    "qwen3-32b": {**_QWEN3, "hidden_size": 5120, "intermediate_size": 25600, "num_hidden_layers": 64,
                  "num_attention_heads": 64, "num_key_value_heads": 8},
    # mistralai/Mixtral-8x7B-v0.1
    "mixtral-8x7b": {"model_type": "mixtral", "vocab_size": 32000, "tie_word_embeddings": False,
                     "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
                     "num_experts_per_tok": 2},
    # deepseek-ai/DeepSeek-V3 (the main model; its multi-token-prediction layer is not served here)
    "deepseek-v3": {"model_type": "deepseek_v3", "vocab_size": 129280, "tie_word_embeddings": False,
                    "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
                    "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
                    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
                    "first_k_dense_replace": 3, "q_lora_rank": 1536, "kv_lora_rank": 512,
                    "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128},
}


def resolve_arch(model: str) -> ModelArch:
    """Built-in name (case-insensitive) → its table entry; bundled model name → its converted
    config.json; a directory holding config.json or a .json file → that. ArchitectureError else."""
    builtin = BUILTIN_CONFIGS.get(model.lower())
    if builtin is not None:
        return arch_from_hf_config(builtin, model.lower())
    from dpserve.model_store.bundled import BUNDLED_MODELS

    if model in BUNDLED_MODELS:
        from dpserve.model_store import resolve_model

        return _from_file(resolve_model(model).path / "config.json", model)
    path = Path(model).expanduser()
    if path.is_dir():
        return _from_file(path / "config.json", model)
    if path.is_file():
        return _from_file(path, model)
    raise ArchitectureError(
        f"unknown model {model!r}: not a built-in architecture ({', '.join(BUILTIN_CONFIGS)}), "
        f"not the bundled model ({', '.join(BUNDLED_MODELS)}), and no config.json there")


def _from_file(path: Path, name: str) -> ModelArch:
    try:
        cfg = json.loads(path.read_text())
    except OSError as exc:
        raise ArchitectureError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ArchitectureError(f"{path} is not valid JSON: {exc}") from exc
    return arch_from_hf_config(cfg, name)
