"""Token ids remembered per text segment, so a chat's earlier messages are not tokenised again.

A multi-turn chat re-sends its whole history every turn, and precise_prefix's tokenizer process
keys every turn's prompt; most of that work is the tokenizer re-encoding messages it encoded for
the turn before. A segment is a piece of text the tokenizer encodes independently of what
surrounds it: one message for the sim's tokenizer (its chat template encodes each message on
its own), the text between two added special tokens for an HF tokenizer (the `tokenizers`
library splits on them before it normalises and pre-tokenises; `HFTokenizer` checks that this
holds for its model before it uses a memo). The ids of the whole text are then the segments'
ids, joined: the same as encoding it at once, faster when the segments were seen before.
"""

from __future__ import annotations

import re
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence

# 16 M characters of remembered text cost ~2 bytes a character (the text, 4-byte ids at ~4
# characters a token) plus ~250 bytes an entry: ~40 MB in the one process that keeps a memo.
DEFAULT_MAX_CHARS = 16 * 1024 * 1024
# A segment longer than this is encoded but not remembered: one huge message must not evict
# every conversation's history.
_MAX_SEGMENT_SHARE = 16


class EncodeMemo:
    """`encode(text)` = the ids of `text`, each segment's ids looked up before they are computed.

    `encode_batch` encodes several segments in one call (the misses of one text); `boundary`, a
    pattern of the separators between segments (None: the whole text is one segment). Bounded:
    the least recently used segments are forgotten past `max_chars` of remembered text."""

    def __init__(self, encode_batch: Callable[[list[str]], Sequence[Sequence[int]]],
                 boundary: re.Pattern[str] | None = None, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self._encode_batch = encode_batch
        self._boundary = boundary
        self.max_chars = max_chars
        self._max_segment_chars = max(1, max_chars // _MAX_SEGMENT_SHARE)
        self._ids: OrderedDict[str, array[int]] = OrderedDict()
        self.num_chars = 0  # of the remembered segments
        self.num_hits = 0
        self.num_misses = 0

    def encode(self, text: str) -> list[int]:
        segments = [text] if self._boundary is None else [s for s in self._boundary.split(text) if s]
        remembered = self._ids
        found: list[array[int] | None] = []
        missing: dict[str, None] = {}  # each new segment once, in order
        for segment in segments:
            ids = remembered.get(segment)
            if ids is None:
                missing[segment] = None
            else:
                remembered.move_to_end(segment)
            found.append(ids)
        self.num_hits += len(segments) - len(missing)
        self.num_misses += len(missing)
        new = dict(zip(missing, self._encode_batch(list(missing)), strict=True)) if missing else {}
        out: list[int] = []
        for segment, ids in zip(segments, found, strict=True):
            if ids is None:
                computed = new[segment]
                out.extend(computed)
                self._remember(segment, computed)
            else:
                out.extend(ids)
        return out

    def _remember(self, segment: str, ids: Sequence[int]) -> None:
        if len(segment) > self._max_segment_chars or segment in self._ids:
            return
        self._ids[segment] = array("I", ids)
        self.num_chars += len(segment)
        while self.num_chars > self.max_chars:
            old, _ = self._ids.popitem(last=False)
            self.num_chars -= len(old)

    def __len__(self) -> int:
        return len(self._ids)


def separator_pattern(separators: Sequence[str]) -> re.Pattern[str] | None:
    """A pattern that splits text at each separator and keeps it as a segment of its own: the
    longest separator first where one is a prefix of another (as the tokenizer matches them)."""
    if not separators:
        return None
    ordered = sorted(set(separators), key=len, reverse=True)
    return re.compile("(" + "|".join(re.escape(s) for s in ordered) + ")")
