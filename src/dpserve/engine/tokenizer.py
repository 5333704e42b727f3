"""HF tokenizer from the model directory, behind the serving `Tokenizer` protocol."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dpserve.serving.encode_memo import EncodeMemo, separator_pattern
from dpserve.serving.engine_client import PromptTooLongError

log = logging.getLogger(__name__)


class HFTokenizer:
    """Wraps transformers' AutoTokenizer; the chat template comes from the model directory.

    With `max_prompt_tokens`, `encode` refuses (PromptTooLongError) text so long that it must have
    more tokens, without tokenising it: a 10 MB prompt is refused in microseconds, not seconds.
    """

    def __init__(self, model_dir: Path, max_prompt_tokens: int | None = None,
                 memo_chars: int = 0) -> None:
        """`memo_chars` > 0: chat prompts are encoded through an EncodeMemo of that size (the text
        between special tokens remembered), where the model's tokenizer allows it."""
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(model_dir))
        # The Rust tokenizer itself: its encode/decode never mutate state, so serving may encode on
        # a worker thread while the loop decodes. (transformers' encode re-sets truncation and
        # padding on it every call, which can fail with "Already borrowed" under concurrency.)
        self._fast = getattr(self._tok, "backend_tokenizer", None)
        self._clean_up = bool(getattr(self._tok, "clean_up_tokenization_spaces", False))
        self.eos_token_ids: tuple[int, ...] = _eos_ids(model_dir, self._tok.eos_token_id)
        self.vocab_size: int = len(self._tok)  # serving rejects token-id prompts beyond it
        self.max_token_chars = _max_token_chars(self._fast)
        self._max_prompt_tokens = max_prompt_tokens
        # None without memo_chars, or where the text between special tokens is encoded in context
        self.encode_memo = _segment_memo(self._tok, self._fast, memo_chars) if memo_chars > 0 else None

    def encode(self, text: str) -> list[int]:
        self._check_length(text)
        if self._fast is not None:
            # encode_batch, not encode: the Rust encode holds the GIL for the whole call (3 s for a
            # 2 MB prompt measured here, the event loop frozen meanwhile); the batch call releases
            # it. The _fast variant skips character offsets we never read (2.6x faster).
            batch = getattr(self._fast, "encode_batch_fast", self._fast.encode_batch)
            return list(batch([text], add_special_tokens=False)[0].ids)
        return list(self._tok.encode(text, add_special_tokens=False))

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
        if self.encode_memo is None:
            return self.encode(str(text))
        self._check_length(str(text))  # as encode does
        return self.encode_memo.encode(str(text))


# Chats that a memo must encode exactly as the whole text is encoded before it is used: spaces,
# newlines and digits on both sides of the special tokens, an empty message, non-ASCII text.
_MEMO_CHECK_CHATS = (
    [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi  there\n"},
     {"role": "assistant", "content": "\n12 345, ok?"}, {"role": "user", "content": ""}],
    [{"role": "user", "content": "  x\u00e9\u4e2d\U0001F600 y\t"}, {"role": "assistant", "content": "z"}],
)


def _segment_memo(tok: Any, fast: Any, max_chars: int) -> EncodeMemo | None:
    """A memo split at the added tokens — exact only when the tokenizer splits the text there
    and encodes each piece independently: no added token that strips the spaces beside it or
    matches only whole words, and a check on sample chats (a SentencePiece "prepend to the first
    piece" pre-tokenizer, for one, fails it). None when that does not hold."""
    if fast is None or getattr(tok, "chat_template", None) is None:
        return None
    added = list(fast.get_added_tokens_decoder().values())
    if any(a.lstrip or a.rstrip or a.single_word or (a.normalized and fast.normalizer is not None)
           for a in added):
        return None
    batch = getattr(fast, "encode_batch_fast", fast.encode_batch)
    memo = EncodeMemo(lambda texts: [list(e.ids) for e in batch(texts, add_special_tokens=False)],
                      separator_pattern([a.content for a in added]), max_chars)
    for messages in _MEMO_CHECK_CHATS:
        try:
            text = str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        except Exception:  # a template that refuses the sample roles: no memo, not an error
            return None
        whole = list(batch([text], add_special_tokens=False)[0].ids)
        if memo.encode(text) != whole or memo.encode(text) != whole:  # computed, then remembered
            log.info("tokenizer encodes the text between special tokens in context: no encode memo")
            return None
    return memo


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
