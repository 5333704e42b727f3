"""The engine's greedy tokens equal transformers' for the bundled model in fp32."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dpserve.serving.engine_client import SamplingParams

pytestmark = [pytest.mark.model, pytest.mark.slow]

NUM_NEW_TOKENS = 32


def reference_greedy(model_dir: Path, prompts: list[list[int]], num_new: int) -> list[list[int]]:
    """Greedy decoding with transformers' own model and KV cache, EOS not special (like ignore_eos)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    outputs = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            past = None
            new: list[int] = []
            for _ in range(num_new):
                out = model(input_ids=ids, past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = int(out.logits[0, -1].argmax())
                new.append(token)
                ids = torch.tensor([[token]])
            outputs.append(new)
    return outputs


def test_greedy_tokens_match_transformers(bundled_model_dir: Path, chat_prompts: list[list[int]],
                                          make_engine: Callable[..., Any]) -> None:
    prompts = chat_prompts[:5]
    engine = make_engine()
    got = engine.generate(prompts, SamplingParams(max_tokens=NUM_NEW_TOKENS, temperature=0.0,
                                                  ignore_eos=True))
    expected = reference_greedy(bundled_model_dir, prompts, NUM_NEW_TOKENS)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert len(g) == NUM_NEW_TOKENS
        first_diff = next((j for j, (a, b) in enumerate(zip(g, e, strict=True)) if a != b), None)
        assert g == e, f"prompt {i} diverges at token {first_diff}"
