"""Sequence: one request's tokens, progress through prefill/decode and its KV block table."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from dpserve.serving.engine_client import FinishReason, SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """Mutable per-request state owned by the engine thread.

    `token_ids` holds prompt + generated tokens. `num_computed_tokens` of them have their K/V in
    the cache (it drops to 0 on preemption: recompute). `block_table[i]` holds tokens
    [i*block_size, (i+1)*block_size).
    """

    request_id: str
    token_ids: list[int]
    sampling: SamplingParams
    arrival_index: int = 0
    num_prompt_tokens: int = field(init=False)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at first schedule
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)  # chained hashes of the full leading blocks
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: FinishReason | None = None
    was_scheduled: bool = False

    def __post_init__(self) -> None:
        self.num_prompt_tokens = len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
