"""Which prompts an engine accepts: length within the context window, ids within the vocabulary."""

from __future__ import annotations

from collections.abc import Sequence


def check_prompt(prompt_token_ids: Sequence[int], max_model_len: int, vocab_size: int) -> None:
    """ValueError unless the prompt leaves room for one token and every id is in the vocabulary."""
    num = len(prompt_token_ids)
    if num < 1 or num >= max_model_len:
        raise ValueError(f"prompt has {num} tokens; it must have 1 to {max_model_len - 1} "
                         f"(max_model_len {max_model_len})")
    if min(prompt_token_ids) < 0 or max(prompt_token_ids) >= vocab_size:
        raise ValueError(f"prompt token ids must be in [0, {vocab_size})")
