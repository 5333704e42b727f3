"""`random`: independent prompts of --input-len tokens (± --range-ratio), no shared prefixes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dpserve.bench.conversation import Conversation, Turn
from dpserve.bench.text import PromptText

if TYPE_CHECKING:
    from dpserve.bench.config import BenchConfig


def sample_lengths(rng: np.random.Generator, mean: int, ratio: float, count: int) -> list[int]:
    """`count` integers uniform in [mean*(1-ratio), mean*(1+ratio)], at least 1."""
    low = max(1, int(mean * (1 - ratio)))
    high = max(low, int(mean * (1 + ratio)))
    return [int(x) for x in rng.integers(low, high + 1, size=count)]


def build(config: BenchConfig, text: PromptText, rng: np.random.Generator) -> list[Conversation]:
    inputs = sample_lengths(rng, config.input_len, config.range_ratio, config.num_prompts)
    outputs = sample_lengths(rng, config.output_len, config.range_ratio, config.num_prompts)
    return [Conversation(turns=(Turn(text.make(rng, n_in), n_out),))
            for n_in, n_out in zip(inputs, outputs, strict=True)]
