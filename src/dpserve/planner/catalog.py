"""`--model` for the planner: a built-in architecture name, the bundled model, or a config.json / HF dir.

The built-in table copies the architecture keys of each model's published Hugging Face
config.json (huggingface.co/<repo>/blob/main/config.json); only shapes, never weights. The bundled
model is in it too, so that planning for it neither needs its package nor converts its weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dpserve.config import short_repr
from dpserve.planner.architecture import ArchitectureError, ModelArch, arch_from_hf_config

_LLAMA3 = {"vocab_size": 128256, "tie_word_embeddings": False, "model_type": "llama"}
_QWEN3 = {"vocab_size": 151936, "tie_word_embeddings": False, "model_type": "qwen3", "head_dim": 128}

BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    # HuggingFaceTB/SmolLM2-135M-Instruct: the bundled model (its GGUF converts to this config.json)
    "smollm2-135m": {"model_type": "llama", "vocab_size": 49152, "tie_word_embeddings": True,
                     "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64},
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
    """Built-in name (case-insensitive) → its table entry; another bundled model's name → its
    converted config.json; a directory holding config.json or a .json file → that.
    ArchitectureError else."""
    if not model.strip():  # Path("") is the current directory
        raise ArchitectureError("--model is empty")
    builtin = BUILTIN_CONFIGS.get(model.lower())
    if builtin is not None:
        return arch_from_hf_config(builtin, model.lower())
    from dpserve.model_store.bundled import BUNDLED_MODELS

    if model in BUNDLED_MODELS:
        return _from_file(_bundled_dir(model) / "config.json", model)
    try:
        path = Path(model).expanduser()
        kind = "dir" if path.is_dir() else "file" if path.is_file() else None
    except (OSError, RuntimeError) as exc:  # a name too long for a path; ~user of no such user
        raise ArchitectureError(f"unknown model {short_repr(model)}: not a usable path "
                                f"({getattr(exc, 'strerror', None) or exc})") from exc
    if kind == "dir":
        return _from_file(path / "config.json", model)
    if kind == "file":
        return _from_file(path, model)
    builtins = [name for name in BUILTIN_CONFIGS if name not in BUNDLED_MODELS]
    raise ArchitectureError(
        f"unknown model {short_repr(model)}: not a built-in architecture ({', '.join(builtins)}), "
        f"not the bundled model ({', '.join(BUNDLED_MODELS)}), and no config.json there")


def _bundled_dir(model: str) -> Path:
    """The bundled model's converted directory (converting it once); its missing package or an
    unusable cache directory is an ArchitectureError."""
    from dpserve.model_store import ModelNotFoundError, resolve_model

    try:
        return resolve_model(model).path
    except ModelNotFoundError as exc:
        raise ArchitectureError(str(exc)) from exc
    except OSError as exc:
        raise ArchitectureError(f"cannot prepare the bundled model {model!r}: {exc}") from exc


def _from_file(path: Path, name: str) -> ModelArch:
    try:
        cfg = json.loads(path.read_text())
    except OSError as exc:
        raise ArchitectureError(f"cannot read {path}: {exc.strerror}") from exc
    except RecursionError as exc:
        raise ArchitectureError(f"{path} is nested too deeply to be a config.json") from exc
    except ValueError as exc:
        raise ArchitectureError(f"{path} is not valid JSON: {exc}") from exc
    return arch_from_hf_config(cfg, name)
