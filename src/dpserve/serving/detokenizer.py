"""Incremental detokenisation: token ids in, text deltas that never split a character out.

Decoding each new token alone breaks multi-byte characters and SentencePiece's leading spaces,
and decoding everything each step is quadratic. Like vLLM/TGI we decode a short window twice
(`prefix_offset..read_offset` and `prefix_offset..end`) and emit the difference, holding text
back while it ends in U+FFFD (an incomplete UTF-8 sequence).
"""

from __future__ import annotations

from collections.abc import Sequence

from dpserve.serving.engine_client import Tokenizer

_REPLACEMENT = "\ufffd"
# Tokens of left context decoded with each step so merges and leading spaces come out right.
_CONTEXT_TOKENS = 5
# Most tokens held back waiting for text before the window moves on anyway, keeping only the bytes
# of one trailing incomplete character (a character is at most 4 UTF-8 bytes, every token carries
# at least one). What is held longer is invalid UTF-8 no later token completes, or special tokens
# that decode to nothing (an `ignore_eos` request may generate thousands); unbounded, every step
# decoded the whole held tail again.
_MAX_HELD_TOKENS = 8


class IncrementalDetokenizer:
    """Turns a growing list of generated token ids into text deltas that never split a char.

    `context` (the tail of a token-id prompt, as vLLM does) is decoded as left context and never
    emitted, so a resumed answer's first token keeps its leading space; a char the context left
    incomplete is emitted whole once a new token completes it.
    """

    def __init__(self, tokenizer: Tokenizer, context: Sequence[int] = ()) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = list(context[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        while self._read_offset and tokenizer.decode(self._ids[:self._read_offset]).endswith(_REPLACEMENT):
            self._read_offset -= 1

    @property
    def num_held(self) -> int:
        """Tokens pushed (or left by the context) whose text has not been returned yet."""
        return len(self._ids) - self._read_offset

    def push(self, new_ids: Sequence[int]) -> str:
        """Add tokens; return the text they complete (may be "" while a char is incomplete)."""
        self._ids.extend(new_ids)
        decode = self._tokenizer.decode
        prefix_text = decode(self._ids[self._prefix_offset:self._read_offset])
        full_text = decode(self._ids[self._prefix_offset:])
        if len(full_text) > len(prefix_text) and not full_text.endswith(_REPLACEMENT):
            return self._advance(len(self._ids), full_text[len(prefix_text):])
        if len(self._ids) - self._read_offset < _MAX_HELD_TOKENS:
            return ""
        return self._release_held(prefix_text, full_text)

    def _release_held(self, prefix_text: str, full_text: str) -> str:
        """The held tokens reached the bound: send what is complete, keep at most the tokens of one
        trailing incomplete character (3 at most; a 4th would complete it)."""
        end = len(self._ids)
        for keep in (1, 2, 3):
            text = self._tokenizer.decode(self._ids[self._prefix_offset:end - keep])
            if not text.endswith(_REPLACEMENT):
                return self._advance(end - keep, text[len(prefix_text):])
        return self._advance(end, full_text[len(prefix_text):])  # invalid UTF-8: sent as it is

    def _advance(self, read_offset: int, delta: str) -> str:
        self._read_offset = read_offset
        self._prefix_offset = max(0, read_offset - _CONTEXT_TOKENS)
        return delta

    def flush(self) -> str:
        """Whatever is still held back (an incomplete char at the very end is sent as U+FFFD)."""
        prefix_text = self._tokenizer.decode(self._ids[self._prefix_offset:self._read_offset])
        full_text = self._tokenizer.decode(self._ids[self._prefix_offset:])
        self._read_offset = len(self._ids)
        self._prefix_offset = self._read_offset
        return full_text[len(prefix_text):] if full_text.startswith(prefix_text) else ""
