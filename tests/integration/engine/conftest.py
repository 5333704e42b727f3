"""Engine fixtures: prompts from the bundled model's tokenizer, and a builder for engines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PROMPT_TEXTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in one sentence why the sky is blue.",
    "List three prime numbers.",
    "Who wrote Romeo and Juliet?",
    "Translate 'good morning' into Spanish.",
    "Give me a short tip for learning to cook.",
    "What is 12 times 12?",
]


@pytest.fixture(scope="session")
def tokenizer(bundled_model_dir: Path) -> Any:
    from dpserve.engine.tokenizer import HFTokenizer

    return HFTokenizer(bundled_model_dir)


@pytest.fixture(scope="session")
def chat_prompts(tokenizer: Any) -> list[list[int]]:
    """Eight chat prompts of different lengths sharing the system-prompt prefix (prefix-cache hits)."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": text}]) for text in PROMPT_TEXTS]


@pytest.fixture(scope="session")
def make_engine(bundled_model_dir: Path, tokenizer: Any) -> Callable[..., Any]:
    from dpserve.engine.config import EngineConfig
    from dpserve.engine.llm_engine import LLMEngine

    def build(**overrides: Any) -> LLMEngine:
        return LLMEngine(EngineConfig(**overrides), bundled_model_dir, tokenizer.eos_token_ids)

    return build
