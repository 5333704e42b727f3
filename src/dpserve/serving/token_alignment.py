"""Token ids released with exactly the text they make (`return_token_ids` for a resumable stream).

A gateway resuming a cut stream continues from the ids its client's text came from: had the text
sent run ahead of the ids (or behind them), the resumed answer would repeat or lose text. The
detokenizer holds back the tokens of an incomplete character and the stop-string matcher holds
back text that may start a stop string (serving/stop_strings.py); this releases text only up to
the last token boundary both have passed, with the ids before that boundary. What it holds is
bounded by theirs: the longest stop string's text and the detokenizer's held tokens, plus the one
token that straddles the matcher's cut.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


class TokenTextAligner:
    """Pairs released text with its ids; positions count from the start of the output."""

    def __init__(self) -> None:
        self._ids: list[int] = []  # generated ids not released yet
        self._text = ""  # text the stop matcher let out, not released yet
        self._bounds: deque[tuple[int, int]] = deque()  # (chars, ids) at token boundaries ahead
        self._detok_chars = 0  # characters the detokenizer has returned
        self._matcher_chars = 0  # characters the stop matcher has let out
        self._sent = (0, 0)  # (chars, ids) released

    def step(self, new_ids: Sequence[int], detok_text: str, num_ids_decoded: int,
             matcher_text: str) -> tuple[str, tuple[int, ...]]:
        """One engine step: its new ids, the detokenizer's text for it, how many generated ids that
        text accounts for so far, and what the stop matcher let out. Returns (text, ids) to send."""
        self._ids += new_ids
        self._detok_chars += len(detok_text)
        last_ids = self._bounds[-1][1] if self._bounds else self._sent[1]
        if detok_text or num_ids_decoded > last_ids:
            self._bounds.append((self._detok_chars, max(num_ids_decoded, last_ids)))
        self._text += matcher_text
        self._matcher_chars += len(matcher_text)
        bound = None
        while self._bounds and self._bounds[0][0] <= self._matcher_chars:
            bound = self._bounds.popleft()
        if bound is None:
            return "", ()
        num_chars, num_ids = bound[0] - self._sent[0], bound[1] - self._sent[1]
        text, self._text = self._text[:num_chars], self._text[num_chars:]
        ids, self._ids = self._ids[:num_ids], self._ids[num_ids:]
        self._sent = bound
        return text, tuple(ids)

    def finish(self, new_ids: Sequence[int], matcher_text: str) -> tuple[str, tuple[int, ...]]:
        """The last step: everything still held, text and ids (nothing follows to resume)."""
        text, ids = self._text + matcher_text, (*self._ids, *new_ids)
        self._text, self._ids, self._bounds = "", [], deque()
        return text, ids
