"""The converted bundled model gives the same greedy tokens as transformers on the GGUF file."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpserve.model_store.bundled import BUNDLED_MODELS

pytestmark = [pytest.mark.model, pytest.mark.slow]

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
]


def test_converted_greedy_equals_gguf(bundled_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = BUNDLED_MODELS["smollm2-135m"].locate()
    assert gguf is not None
    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    converted = AutoModelForCausalLM.from_pretrained(bundled_model_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
    ref_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
        ref_ids = ref_tok.apply_chat_template(messages, add_generation_prompt=True,
                                              return_tensors="pt", return_dict=True)["input_ids"]
        assert ids.tolist() == ref_ids.tolist()
        out = converted.generate(ids, max_new_tokens=16, do_sample=False)
        ref = reference.generate(ref_ids, max_new_tokens=16, do_sample=False)
        assert out.tolist() == ref.tolist(), prompt
    answer = converted.generate(
        tok.apply_chat_template([{"role": "user", "content": PROMPTS[0]}],
                                add_generation_prompt=True, return_tensors="pt",
                                return_dict=True)["input_ids"], max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(answer[0])
