"""`sharegpt`: first human turn of each ShareGPT conversation as the prompt, the first reply's length
as max_tokens (vLLM's filter: prompt >= 4 and <= 1024 tokens, reply >= 4, both <= 2048)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dpserve.bench.conversation import Conversation, Turn
from dpserve.bench.text import PromptText
from dpserve.config import ConfigError

if TYPE_CHECKING:
    from dpserve.bench.config import BenchConfig

MIN_LEN = 4
MAX_PROMPT_LEN = 1024
MAX_TOTAL_LEN = 2048
_ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                 "chatgpt": "assistant", "bard": "assistant", "bing": "assistant"}


def read_records(path: Path) -> list[Any]:
    """A JSON array, or JSON Lines (one conversation object per line)."""
    try:
        raw = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read --dataset-path {path}: {exc.strerror}") from exc
    try:
        data = json.loads(raw)
        return data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        pass
    try:
        return [json.loads(line) for line in raw.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is neither JSON nor JSON Lines: {exc}") from exc


def first_exchange(record: Any) -> tuple[str, str] | None:
    """(first user message, the reply after it) from a ShareGPT `conversations` list or an
    OpenAI-style `messages` list; None when the record has no such pair."""
    if not isinstance(record, dict):
        return None
    turns = record.get("conversations") or record.get("messages") or []
    pairs = [(_ROLE_ALIASES.get(str(t.get("from", t.get("role", "")))), t.get("value", t.get("content")))
             for t in turns if isinstance(t, dict)]
    for (role, text), (next_role, reply) in itertools.pairwise(pairs):
        if role == "user" and next_role == "assistant" and isinstance(text, str) and isinstance(reply, str):
            return text, reply
    return None


def _usable(records: list[Any], text: PromptText) -> Iterator[Turn]:
    for record in records:
        pair = first_exchange(record)
        if pair is None:
            continue
        prompt_len, reply_len = text.count(pair[0]), text.count(pair[1])
        if (prompt_len < MIN_LEN or reply_len < MIN_LEN or prompt_len > MAX_PROMPT_LEN
                or prompt_len + reply_len > MAX_TOTAL_LEN):
            continue
        yield Turn(pair[0], reply_len)


def build(config: BenchConfig, text: PromptText, rng: np.random.Generator) -> list[Conversation]:
    assert config.dataset_path is not None  # checked by BenchConfig
    records = read_records(config.dataset_path)
    order = rng.permutation(len(records))
    turns: list[Turn] = []
    for turn in _usable([records[i] for i in order], text):
        turns.append(turn)
        if len(turns) == config.num_prompts:
            break
    if len(turns) < config.num_prompts:
        raise ConfigError(f"{config.dataset_path} has {len(turns)} usable conversations, "
                          f"--num-prompts asks for {config.num_prompts}")
    return [Conversation(turns=(turn,)) for turn in turns]
