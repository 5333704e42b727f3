"""HF tokenizer from the model directory, behind the serving `Tokenizer` protocol."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dpserve.serving.encode_memo import hf_segment_memo
from dpserve.serving.engine_client import PromptTooLongError


class HFTokenizer:
    """Wraps transformers' AutoTokenizer; the chat template comes from the model directory.

    With `max_prompt_tokens`, `encode` refuses (PromptTooLongError) text so long that it must have
    more tokens, without tokenising it: a 10 MB prompt is refused in microseconds, not seconds.
    """

    def __init__(self, model_dir: Path, max_prompt_tokens: int | None = None,
                 memo_bytes: int = 0) -> None:
        """`memo_bytes` > 0: chat prompts are encoded through an EncodeMemo of that size (the text
        between added tokens remembered) where the model's tokenizer allows it; one thread only
        then (precise_prefix's tokenizer process), as the memo is not locked."""
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(model_dir))
        # The Rust tokenizer itself: its encode/decode never mutate state, so serving may encode on
        # a worker thread while the loop decodes. (transformers' encode re-sets truncation and
        # padding on it every call, which can fail with "Already borrowed" under concurrency.)
        self._fast = getattr(self._tok, "backend_tokenizer", None)
        if self._fast is not None:  # a tokenizer.json saved with these would cut or pad every prompt
            self._fast.no_truncation()
            self._fast.no_padding()
        self._clean_up = bool(getattr(self._tok, "clean_up_tokenization_spaces", False))
        self.eos_token_ids: tuple[int, ...] = _eos_ids(model_dir, self._tok.eos_token_id)
        self.vocab_size: int = len(self._tok)  # serving rejects token-id prompts beyond it
        self.max_token_chars = _max_token_chars(self._fast)
        self._max_prompt_tokens = max_prompt_tokens
        # None without memo_bytes, or (with the reason why) where this tokenizer cannot have one
        self.encode_memo, self.no_memo_reason = (
            hf_segment_memo(self._tok, self._fast, self._encode_texts, memo_bytes) if memo_bytes > 0
            else (None, "not asked for"))

    def encode(self, text: str) -> list[int]:
        self._check_length(text)
        if self._fast is not None:
            return self._encode_texts([text])[0]
        return list(self._tok.encode(text, add_special_tokens=False))

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids, with the Rust tokenizer. encode_batch, not encode: the Rust encode holds
        the GIL for the whole call (3 s for a 2 MB prompt measured here, the event loop frozen
        meanwhile); the batch call releases it. The _fast variant skips character offsets we never
        read (2.6x faster)."""
        fast = self._fast
        assert fast is not None  # callers check: only a fast tokenizer has a batch encode
        batch = getattr(fast, "encode_batch_fast", fast.encode_batch)
        return [list(e.ids) for e in batch(texts, add_special_tokens=False)]

    def _check_length(self, text: str) -> None:
        limit, per_token = self._max_prompt_tokens, self.max_token_chars
        if limit is not None and per_token is not None and len(text) > limit * per_token:
            raise PromptTooLongError(len(text), -(-len(text) // per_token))

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
        text = str(text)
        if self.encode_memo is None:
            return self.encode(text)
        self._check_length(text)  # as encode does
        return self.encode_memo.encode(text)


def _max_token_chars(fast: Any) -> int | None:
    """The most input characters one token can stand for, or None when unknown.

    A token string never stands for more input characters than it has: byte-level vocabularies
    spell each byte as one character, SentencePiece ones each character as itself. A normalizer
    could shrink the input first (stripping, NFKC), so then there is no such bound.
    """
    if fast is None or fast.normalizer is not None:
        return None
    vocab = fast.get_vocab(with_added_tokens=True)
    return max((len(token) for token in vocab), default=None)


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
