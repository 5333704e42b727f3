"""Incremental detokenisation and stop strings: token ids in, safe-to-send text deltas out.

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
        self.incomplete = False  # the last push ended inside a char: its text is held back

    def push(self, new_ids: Sequence[int]) -> str:
        """Add tokens; return the text they complete (may be "" while a char is incomplete)."""
        self._ids.extend(new_ids)
        decode = self._tokenizer.decode
        prefix_text = decode(self._ids[self._prefix_offset:self._read_offset])
        full_text = decode(self._ids[self._prefix_offset:])
        self.incomplete = full_text.endswith(_REPLACEMENT)
        if self.incomplete or len(full_text) <= len(prefix_text):
            return ""
        delta = full_text[len(prefix_text):]
        self._read_offset = len(self._ids)
        self._prefix_offset = max(0, self._read_offset - _CONTEXT_TOKENS)
        return delta

    def flush(self) -> str:
        """Whatever is still held back (an incomplete char at the very end is sent as U+FFFD)."""
        prefix_text = self._tokenizer.decode(self._ids[self._prefix_offset:self._read_offset])
        full_text = self._tokenizer.decode(self._ids[self._prefix_offset:])
        self._read_offset = len(self._ids)
        self._prefix_offset = self._read_offset
        self.incomplete = False
        return full_text[len(prefix_text):] if full_text.startswith(prefix_text) else ""


class StopStringMatcher:
    """Finds stop strings across delta boundaries and holds back text that may start one.

    `push` returns (text safe to send, stopped). Once stopped, the stop string and anything after
    it are dropped, as in vLLM without `include_stop_str_in_output`.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._max_len = max((len(s) for s in self._stops), default=0)
        self._text = ""
        self._sent = 0
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the output

    def push(self, delta: str) -> tuple[str, bool]:
        if self.stopped or not delta:
            return "", self.stopped
        if not self._stops:  # the common case: nothing to search or hold back
            self._text += delta
            self._sent = len(self._text)
            return delta, False
        search_from = max(0, len(self._text) - self._max_len + 1)
        self._text += delta
        cut = self._first_stop(search_from)
        if cut is not None:
            self.stopped = True
            self.matched = next(s for s in self._stops if self._text.startswith(s, cut))
            out = self._text[self._sent:cut]
            self._text = self._text[:cut]
            self._sent = cut
            return out, True
        safe_end = len(self._text) - self._held_back()
        out = self._text[self._sent:safe_end]
        self._sent = max(self._sent, safe_end)
        return out, False

    def flush(self) -> str:
        """Text held back when generation ended for another reason."""
        out = self._text[self._sent:]
        self._sent = len(self._text)
        return out

    @property
    def text(self) -> str:
        """All output text so far, stop string excluded."""
        return self._text

    @property
    def holding(self) -> bool:
        """Some text is held back because it may start a stop string."""
        return self._sent < len(self._text)

    def _first_stop(self, search_from: int) -> int | None:
        hits = [i for s in self._stops if (i := self._text.find(s, search_from)) != -1]
        return min(hits) if hits else None

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of some stop string."""
        for k in range(min(self._max_len - 1, len(self._text)), 0, -1):
            tail = self._text[-k:]
            if any(s.startswith(tail) for s in self._stops):
                return k
        return 0
