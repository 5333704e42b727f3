"""The sim's cheap deterministic tokenizer: regex pieces hashed into a vocab, filler-word decoding.

Pieces are split like GPT-2 (` ?word`, ` ?punct`, whitespace). A piece that is one of the filler
words (" " + two syllables, e.g. " tavo") maps to that word's id; any other piece is hashed
(crc32) into the rest of the vocab. Generated tokens are filler-word ids, so generated text
re-encodes to the same ids — multi-turn conversations hit the prefix cache as with a real model.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

from dpserve.serving.encode_memo import EncodeMemo

EOS_ID = 0
IM_START_ID = 1
IM_END_ID = 2
NUM_SPECIAL = 3
VOCAB_SIZE = 32768

_PIECE = re.compile(r" ?\w+| ?[^\s\w]+|\s+(?!\S)|\s+")
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
FILLER_WORDS = tuple(a + b for a in _SYLLABLES for b in _SYLLABLES)
FIRST_WORD_ID = NUM_SPECIAL
NUM_WORDS = len(FILLER_WORDS)
_FIRST_HASHED_ID = FIRST_WORD_ID + NUM_WORDS
_NUM_HASHED = VOCAB_SIZE - _FIRST_HASHED_ID
_MAX_REMEMBERED_PIECES = 200_000  # ~20 MB of pieces and ids


class SimTokenizer:
    """Implements dpserve.serving.engine_client.Tokenizer without any model files."""

    eos_token_ids: tuple[int, ...] = (EOS_ID,)
    vocab_size: int = VOCAB_SIZE

    def __init__(self, memo_bytes: int = 0) -> None:
        """`memo_bytes` > 0: each message's ids are remembered (an EncodeMemo of that size) for the
        chat template: precise_prefix's tokenizer process re-keys a chat's whole history every
        turn. One thread only then: the memo is not locked."""
        # Every filler word, then every other piece seen → its id: a dict hit instead of a method
        # call, an encode and a crc32 took `encode` from 710 to 485 µs on 8 KB of chat text (bench
        # text words). Bounded: client text can hold any number of distinct pieces.
        self._ids = {" " + w: FIRST_WORD_ID + i for i, w in enumerate(FILLER_WORDS)}
        self._encode_message = (EncodeMemo(self._encode_batch, max_bytes=memo_bytes).encode
                                if memo_bytes > 0 else self.encode)

    def encode(self, text: str) -> list[int]:
        # finditer, not findall: one findall over megabytes holds the GIL for a second (the event
        # loop frozen with it, although serving calls this on a worker thread); stepping the
        # iterator in Python lets the interpreter switch threads every few milliseconds.
        ids, out = self._ids, []
        for match in _PIECE.finditer(text):
            piece = match.group()
            token_id = ids.get(piece)
            if token_id is None:
                token_id = _hashed_id(piece)
                if len(ids) < _MAX_REMEMBERED_PIECES:
                    ids[piece] = token_id
            out.append(token_id)
        return out

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(" " + FILLER_WORDS[(t - FIRST_WORD_ID) % NUM_WORDS]
                       for t in token_ids if t >= NUM_SPECIAL)

    def apply_chat_template(self, messages: list[dict[str, Any]], *,
                            continue_final_message: bool = False) -> list[int]:
        """`<|im_start|>role\\ncontent<|im_end|>` per message, then an open assistant turn; with
        `continue_final_message` the last message stays open instead (no end, no new turn)."""
        ids: list[int] = []
        for message in messages:
            content = message.get("content") or ""
            if not isinstance(content, str):
                raise ValueError("message content must be text")
            ids += [IM_START_ID, *self._encode_message(f"{message['role']}\n{content}"), IM_END_ID]
        if continue_final_message:
            return ids[:-1]
        return [*ids, IM_START_ID, *self.encode("assistant\n")]


def _hashed_id(piece: str) -> int:
    """Any piece that is not a filler word: crc32 into the ids after the words'."""
    return _FIRST_HASHED_ID + zlib.crc32(piece.encode()) % _NUM_HASHED
