"""`multi-turn`: --num-sessions conversations of --turns user turns (--input-len tokens each); every
turn resends the whole history under one `x-session-id`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dpserve.bench.conversation import Conversation, Turn
from dpserve.bench.text import PromptText

if TYPE_CHECKING:
    from dpserve.bench.config import BenchConfig


def build(config: BenchConfig, text: PromptText, rng: np.random.Generator) -> list[Conversation]:
    return [Conversation(turns=tuple(Turn(text.make(rng, config.input_len), config.output_len)
                                     for _ in range(config.turns)),
                         session_id=f"bench-{config.seed}-{i}")
            for i in range(config.num_sessions)]
