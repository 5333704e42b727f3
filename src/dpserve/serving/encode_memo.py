"""Token ids remembered per text segment, so a chat's earlier messages are not tokenised again.

A multi-turn chat re-sends its whole history every turn, and precise_prefix's tokenizer process
keys every turn's prompt; most of that work is the tokenizer re-encoding messages it encoded for
the turn before. A segment is a piece of text the tokenizer encodes independently of what
surrounds it: one message for the sim's tokenizer (its chat template encodes each message on
its own), the text between two added tokens for an HF tokenizer (the `tokenizers` library
splits on its added tokens before it pre-tokenises what lies between them; `hf_segment_memo`
gives a memo only to tokenizers where that holds, and says why not to the others). The ids of
the whole text are then the segments' ids, joined: the same as encoding it at once, faster
when the segments were seen before. One memo belongs to one thread (the tokenizer process has
one): it is not locked.
"""

from __future__ import annotations

import re
import sys
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# What the remembered segments may cost, counted as Python holds them (the text, 4-byte ids, and
# `_ENTRY_BYTES` an entry), so that short distinct segments — a client can cut its text into
# thousands with special-token strings — or 4-byte characters cannot exceed it.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# An OrderedDict entry (its hash slots and its link node), an array object's header, and the
# (ids, cost) tuple with its int: ~330 bytes, measured with tracemalloc on ~10-16 k tiny segments
# (docs/benchmarks.md; 200 left 1.5 MB of a 4.2 MB bound uncounted once the tuple came in).
_ENTRY_BYTES = 330
# A segment costing more than this share of the memo is encoded but not remembered: one huge
# message must not evict every conversation's history.
_MAX_SEGMENT_SHARE = 16


class EncodeMemo:
    """`encode(text)` = the ids of `text`, each segment's ids looked up before they are computed.

    `encode_batch` encodes several segments in one call (the misses of one text); `separators`
    splits a text into its segments and keeps the separators as segments of their own (None: the
    whole text is one segment). Bounded: the least recently used segments are forgotten past
    `max_bytes`."""

    def __init__(self, encode_batch: Callable[[list[str]], Sequence[Sequence[int]]],
                 separators: re.Pattern[str] | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._encode_batch = encode_batch
        self._separators = separators
        self.max_bytes = max_bytes
        self._max_segment_bytes = max(1, max_bytes // _MAX_SEGMENT_SHARE)
        self._ids: OrderedDict[str, tuple[array[int], int]] = OrderedDict()  # segment → (ids, cost)
        self.num_bytes = 0  # what the remembered segments cost
        self.num_hits = 0  # segments found remembered
        self.num_misses = 0  # segments encoded

    def encode(self, text: str) -> list[int]:
        segments = [text] if self._separators is None else [s for s in self._separators.split(text) if s]
        remembered = self._ids
        found: list[array[int] | None] = []
        missing: dict[str, None] = {}  # each new segment once, in order
        for segment in segments:
            entry = remembered.get(segment)
            if entry is None:
                missing[segment] = None
                found.append(None)
            else:
                remembered.move_to_end(segment)
                found.append(entry[0])
        self.num_hits += len(segments) - found.count(None)
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
        if segment in self._ids:
            return
        remembered = array("I", ids)
        # Charged once, as it is now: the size of a str can grow later (its UTF-8 form cached).
        cost = sys.getsizeof(segment) + remembered.itemsize * len(remembered) + _ENTRY_BYTES
        if cost > self._max_segment_bytes:
            return
        self._ids[segment] = (remembered, cost)
        self.num_bytes += cost
        while self.num_bytes > self.max_bytes:
            _, (_, old_cost) = self._ids.popitem(last=False)
            self.num_bytes -= old_cost

    def __len__(self) -> int:
        return len(self._ids)


def separator_pattern(separators: Iterable[str]) -> re.Pattern[str] | None:
    """A pattern that splits text at each separator, leftmost and then longest (as the tokenizer
    matches its added tokens), keeping it as a segment. Built as a trie, so a position costs the
    length of the longest separator, not the number of separators (Llama-3 has 256)."""
    words = sorted(set(separators))
    if not any(words):
        return None
    return re.compile("(" + _trie_pattern([w for w in words if w]) + ")")


def _trie_pattern(words: list[str]) -> str:
    """Regex of sorted, distinct, non-empty `words`: one branch per first character, so at most
    one branch can go on at any point; where a word ends and longer ones go on, a greedy `?`
    takes the longest. A node with one way on adds no group, so nesting is by branch points."""
    by_first: dict[str, list[str]] = {}
    for word in words:
        by_first.setdefault(word[0], []).append(word[1:])
    branches = []
    for first, rests in by_first.items():
        longer = [r for r in rests if r]
        tail = _trie_pattern(longer) if longer else ""
        if tail and "" in rests:
            tail = f"(?:{tail})?"
        branches.append(re.escape(first) + tail)
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


# Chats a memo must encode exactly as the whole text is encoded before it is used: spaces,
# newlines and digits on both sides of the added tokens, an empty message, non-ASCII text. Roles
# alternate from "user", which every chat template accepts (some refuse "system").
_CHECK_CHATS = (
    [{"role": "user", "content": " Be brief. Hi  there\n"}, {"role": "assistant", "content": "\n12 345, ok?"},
     {"role": "user", "content": ""}],
    [{"role": "user", "content": "  x\u00e9\u4e2d\U0001F600 y\t"}, {"role": "assistant", "content": "z "}],
)


def hf_segment_memo(tok: Any, fast: Any, encode_batch: Callable[[list[str]], list[list[int]]],
                    max_bytes: int) -> tuple[EncodeMemo | None, str | None]:
    """A memo for an HF tokenizer (transformers' `tok`, its Rust `fast` backend, and
    `encode_batch`, the owner's way of encoding texts with it), split at the added tokens —
    exact only when the tokenizer splits its text there and encodes each piece on its own, so no
    memo (and the reason why) unless:
    - no added token strips the spaces beside it or matches whole words only;
    - all added tokens are matched alike: the library matches the non-normalized ones on the
      text and the normalized ones in what is left, which one pattern cannot do; with a
      normalizer, normalized ones are also matched after normalising;
    - special tokens are split out at all (not `split_special_tokens`), and nothing truncates
      or pads (a saved `truncation` would cut each segment instead of the prompt);
    - the sample chats encode the same both ways (a SentencePiece "prepend ▁ to the first
      piece" pre-tokenizer, for one, fails this).
    Returns (the memo, None) or (None, why not)."""
    why = _why_not_segments(tok, fast)
    if why is not None:
        return None, why
    try:
        separators = separator_pattern(a.content for a in fast.get_added_tokens_decoder().values())
    except (RecursionError, re.error):  # added tokens of ~1,000 characters, or ~500 branch points
        return None, "its added tokens are too long to split text by"
    memo = EncodeMemo(encode_batch, separators, max_bytes)
    why = _why_check_fails(tok, encode_batch, memo)
    return (memo, None) if why is None else (None, why)


def _why_not_segments(tok: Any, fast: Any) -> str | None:
    if fast is None:
        return "the tokenizer has no fast (Rust) backend"
    if getattr(tok, "chat_template", None) is None:
        return "the tokenizer has no chat template"
    added = list(fast.get_added_tokens_decoder().values())
    if any(a.lstrip or a.rstrip or a.single_word for a in added):
        return "an added token strips the spaces beside it or matches whole words only"
    normalized = {a.normalized for a in added}
    if len(normalized) > 1 or (fast.normalizer is not None and True in normalized):
        return "its added tokens are matched after normalising"
    if getattr(fast, "encode_special_tokens", False):
        return "it does not split special tokens out of the text"
    if fast.truncation is not None or fast.padding is not None:
        return "it truncates or pads what it encodes"
    return None


def _why_check_fails(tok: Any, encode_batch: Callable[[list[str]], list[list[int]]],
                     memo: EncodeMemo) -> str | None:
    for messages in _CHECK_CHATS:
        try:
            text = str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        except Exception as exc:  # a template that refuses the sample chat: no memo, not an error
            return f"its chat template refused a sample chat ({type(exc).__name__})"
        whole = encode_batch([text])[0]
        if memo.encode(text) != whole or memo.encode(text) != whole:  # computed, then remembered
            return "it encodes the text between added tokens in context"
    return None
