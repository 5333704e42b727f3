"""`shared-prefix`: like SGLang's generated-shared-prefix — --num-groups system prompts, each
followed by --prompts-per-group different questions; requests are shuffled across groups."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dpserve.bench.conversation import Conversation, Turn
from dpserve.bench.text import PromptText

if TYPE_CHECKING:
    from dpserve.bench.config import BenchConfig


def build(config: BenchConfig, text: PromptText, rng: np.random.Generator) -> list[Conversation]:
    systems = [text.make(rng, config.system_prompt_len) for _ in range(config.num_groups)]
    convs = [Conversation(turns=(Turn(text.make(rng, config.question_len), config.output_len),),
                          system_text=system)
             for system in systems for _ in range(config.prompts_per_group)]
    order = rng.permutation(len(convs))
    return [convs[i] for i in order]
