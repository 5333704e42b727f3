"""HF tokenizer from the model directory, behind the serving `Tokenizer` protocol."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class HFTokenizer:
    """Wraps transformers' AutoTokenizer; the chat template comes from the model directory."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(model_dir))
        # The Rust tokenizer itself: its encode/decode never mutate state, so serving may encode on
        # a worker thread while the loop decodes. (transformers' encode re-sets truncation and
        # padding on it every call, which can fail with "Already borrowed" under concurrency.)
        self._fast = getattr(self._tok, "backend_tokenizer", None)
        self._clean_up = bool(getattr(self._tok, "clean_up_tokenization_spaces", False))
        self.eos_token_ids: tuple[int, ...] = _eos_ids(model_dir, self._tok.eos_token_id)
        self.vocab_size: int = len(self._tok)  # serving rejects token-id prompts beyond it

    def encode(self, text: str) -> list[int]:
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=False).ids)
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        if self._fast is None:
            return str(self._tok.decode(list(token_ids), skip_special_tokens=True))
        text = str(self._fast.decode(list(token_ids), skip_special_tokens=True))
        return str(self._tok.clean_up_tokenization(text)) if self._clean_up else text

    def apply_chat_template(self, messages: list[dict[str, Any]], *,
                            continue_final_message: bool = False) -> list[int]:
        try:
            text = self._tok.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=not continue_final_message,
                                                 continue_final_message=continue_final_message)
        except Exception as exc:  # jinja errors, missing keys, template raise_exception(...)
            raise ValueError(f"messages cannot be rendered by the chat template: {exc}") from exc
        return self.encode(str(text))


def _eos_ids(model_dir: Path, tokenizer_eos: int | None) -> tuple[int, ...]:
    """EOS ids from generation_config.json (int or list) plus the tokenizer's own EOS token."""
    ids: list[int] = []
    gen_path = model_dir / "generation_config.json"
    if gen_path.is_file():
        eos = json.loads(gen_path.read_text()).get("eos_token_id")
        ids.extend(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if tokenizer_eos is not None:
        ids.append(tokenizer_eos)
    return tuple(dict.fromkeys(int(i) for i in ids))
