"""GGUF file → HF-format directory (config.json, fp32 safetensors, tokenizer, chat template).

transformers dequantises the GGUF tensors and undoes llama.cpp's q/k permutation, so the result
loads like any HF checkpoint, with no gguf dependency at serving time.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Write the HF-format model for `gguf_path` into the (existing, empty) `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s into %s (one time)", gguf_path.name, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    _save_dequantised(model, out_dir)
    tokenizer.save_pretrained(out_dir)
    _ensure_chat_template_in_tokenizer_config(out_dir, tokenizer.chat_template)
    (out_dir / "dpserve_source.json").write_text(
        json.dumps({"gguf_file": gguf_path.name, "gguf_bytes": gguf_path.stat().st_size}) + "\n"
    )


def _save_dequantised(model: Any, out_dir: Path) -> None:
    """save_pretrained refuses GGUF-loaded models, so write config and weights ourselves."""
    from safetensors.torch import save_file

    config = model.config.to_dict()
    # The weights are dequantised now: the saved config must not claim GGUF quantisation.
    config.pop("quantization_config", None)
    config["torch_dtype"] = "float32"
    config["architectures"] = [type(model).__name__]
    config.pop("_name_or_path", None)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = model.state_dict()
    if config.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)  # shares storage with the embedding
    save_file({k: v.detach().contiguous() for k, v in state.items()},
              str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out_dir)


def _ensure_chat_template_in_tokenizer_config(out_dir: Path, template: str | None) -> None:
    """Recent transformers write chat_template.jinja; older readers look in tokenizer_config."""
    if not template:
        return
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    if "chat_template" not in config:
        config["chat_template"] = template
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    jinja_path = out_dir / "chat_template.jinja"
    if not jinja_path.exists():
        jinja_path.write_text(template)
