"""Tiny random Llama-family checkpoints (untied embeddings, legacy rope_theta, Qwen2 q/k/v bias)
load into the engine and decode exactly like transformers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from dpserve.engine.config import EngineConfig
from dpserve.engine.llm_engine import LLMEngine
from dpserve.serving.engine_client import SamplingParams

pytestmark = pytest.mark.model

TINY = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "initializer_range": 0.3}


def save_tiny(kind: str, path: Path) -> Path:
    import transformers

    torch.manual_seed(0)
    if kind == "qwen2":
        model: Any = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**TINY, tie_word_embeddings=True))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY, tie_word_embeddings=False))
    with torch.no_grad():  # random but non-trivial biases and norms, so a missing one shows
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(torch.randn_like(param) * 0.3)
    model.save_pretrained(str(path), safe_serialization=True)
    if kind == "llama-legacy-rope":  # older configs carry rope_theta at the top level
        cfg = json.loads((path / "config.json").read_text())
        cfg.pop("rope_parameters", None)
        cfg["rope_theta"] = 50000.0
        (path / "config.json").write_text(json.dumps(cfg))
    return path


def reference(path: Path, prompt: list[int], num_new: int) -> list[int]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=num_new, min_new_tokens=num_new,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    return [int(t) for t in out[0, len(prompt):]]


@pytest.mark.parametrize("kind", ["qwen2", "llama-legacy-rope"])
def test_tiny_checkpoint_decodes_like_transformers(kind: str, tmp_path: Path) -> None:
    path = save_tiny(kind, tmp_path / kind)
    engine = LLMEngine(EngineConfig(kv_cache_tokens=1024, block_size=4), path)
    prompts = [[5, 17, 200, 3, 9, 44, 101], [250, 1, 2, 3], list(range(30, 60))]
    got = engine.generate(prompts, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))
    assert got == [reference(path, p, 12) for p in prompts]
