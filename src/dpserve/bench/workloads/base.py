"""The workload contract: turn a config and a seeded generator into conversations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from dpserve.bench.conversation import Conversation
from dpserve.bench.text import PromptText

if TYPE_CHECKING:
    from dpserve.bench.config import BenchConfig


class Workload(Protocol):
    """A module with one `build` function."""

    def build(self, config: BenchConfig, text: PromptText,
              rng: np.random.Generator) -> list[Conversation]:
        """All conversations of the run, in issue order. Deterministic given `rng`'s seed and
        `config`; performs no network I/O (sharegpt may read its dataset file)."""
        ...
