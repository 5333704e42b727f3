"""EncodeMemo: the joined segment ids equal the whole text's, bounded in bytes, split as the
tokenizer splits (leftmost, then longest, separator)."""

from __future__ import annotations

import random
import zlib

from dpserve.serving.encode_memo import EncodeMemo, separator_pattern


class _SegmentEncoder:
    """Ids that depend on the whole segment (its crc32, then its length), so a memo that split a
    text anywhere other than where it must would join different ids; records every batch."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[list[int]]:
        self.calls.append(list(texts))
        return [self.ids(t) for t in texts]

    @staticmethod
    def ids(segment: str) -> list[int]:
        return [zlib.crc32(segment.encode("utf-8", "surrogatepass")), len(segment)]


def _leftmost_longest(text: str, separators: list[str]) -> list[str]:
    """The split the tokenizer makes, written the slow and obvious way."""
    out, piece, i = [], "", 0
    while i < len(text):
        found = [s for s in separators if text.startswith(s, i)]
        if found:
            longest = max(found, key=len)
            out += [piece] if piece else []
            out.append(longest)
            piece, i = "", i + len(longest)
        else:
            piece, i = piece + text[i], i + 1
    return out + ([piece] if piece else [])


def test_whole_text_is_one_segment_without_separators() -> None:
    enc = _SegmentEncoder()
    memo = EncodeMemo(enc)
    assert memo.encode("user\nhello") == enc.ids("user\nhello")
    assert memo.encode("user\nhello") == enc.ids("user\nhello")
    assert enc.calls == [["user\nhello"]]
    assert (memo.num_hits, memo.num_misses, len(memo)) == (1, 1, 1)


def test_only_the_new_segments_are_encoded_in_one_batch() -> None:
    enc = _SegmentEncoder()
    memo = EncodeMemo(enc, separator_pattern(["<s>", "</s>"]))
    first = "<s>user\nhi</s>\n<s>assistant\n"
    segments = ["<s>", "user\nhi", "</s>", "\n", "<s>", "assistant\n"]
    assert memo.encode(first) == [i for s in segments for i in enc.ids(s)]
    assert enc.calls == [["<s>", "user\nhi", "</s>", "\n", "assistant\n"]]  # "<s>" once
    second = first + "yo</s>\n<s>user\nmore</s>\n<s>assistant\n"
    memo.encode(second)
    assert enc.calls[1] == ["assistant\nyo", "user\nmore"]


def test_equal_to_the_segments_the_tokenizer_makes_on_random_texts() -> None:
    rng = random.Random(7)
    alphabet = ["<|im_start|>", "<|im_end|>", "<|im", "a", " ", "\n", "é", "|", "<"]
    for _ in range(300):
        separators = list({"".join(rng.choice("<|>im_ab.*") for _ in range(rng.randint(1, 5)))
                           for _ in range(rng.randint(1, 6))} | {"<|im_start|>", "<|im"})
        enc = _SegmentEncoder()
        memo = EncodeMemo(enc, separator_pattern(separators), max_bytes=4000)
        for _ in range(10):
            text = "".join(rng.choice(alphabet + separators) for _ in range(rng.randint(0, 30)))
            expected = [i for s in _leftmost_longest(text, separators) for i in enc.ids(s)]
            assert memo.encode(text) == expected
            assert memo.encode(text) == expected  # and from what it remembered
        assert memo.num_bytes <= 4000
        assert memo.num_bytes == sum(cost for _, cost in memo._ids.values())  # after evictions too


def test_separator_pattern_is_leftmost_then_longest() -> None:
    pattern = separator_pattern(["<|im", "<|im_start|>", "m_s"])
    assert pattern is not None
    assert [s for s in pattern.split("x<|im_start|>y<|imz") if s] == ["x", "<|im_start|>", "y", "<|im", "z"]
    assert [s for s in pattern.split("im_start") if s] == ["i", "m_s", "tart"]
    assert separator_pattern([]) is None
    assert separator_pattern([""]) is None


def test_least_recently_used_segments_are_forgotten_past_the_bound() -> None:
    enc = _SegmentEncoder()
    probe = EncodeMemo(enc)
    probe.encode("aaaaaaaaaa")
    one = probe.num_bytes  # what one 10-character segment with 2 ids costs
    memo = EncodeMemo(enc, max_bytes=16 * one)
    for word in ("aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"):
        memo.encode(word)
    memo.encode("aaaaaaaaaa")  # used again: now the most recent
    for i in range(14):
        memo.encode(f"{i:010d}")
    assert len(memo) == 16 and memo.num_bytes == 16 * one
    enc.calls.clear()
    memo.encode("aaaaaaaaaa")
    memo.encode("bbbbbbbbbb")
    assert enc.calls == [["bbbbbbbbbb"]]  # b, least recently used, was dropped; a was kept


def test_many_tiny_segments_are_bounded_by_what_they_cost_not_their_length() -> None:
    memo = EncodeMemo(_SegmentEncoder(), separator_pattern(["|"]), max_bytes=100_000)
    for n in range(200):  # 2-character segments: a character-count bound would keep ~50 K of them
        memo.encode("|".join(f"{i % 100:02d}" + chr(0x20000 + n * 500 + i) for i in range(500)))
    assert memo.num_bytes <= 100_000
    assert len(memo) < 100_000 // 200  # each entry is charged its overhead


def test_a_huge_segment_is_encoded_but_not_remembered() -> None:
    enc = _SegmentEncoder()
    memo = EncodeMemo(enc, max_bytes=16 * 400)
    big = "x" * 1000
    assert memo.encode(big) == enc.ids(big)
    assert memo.encode(big) == enc.ids(big)
    assert len(enc.calls) == 2 and len(memo) == 0 and memo.num_bytes == 0


def test_a_text_repeating_one_new_segment_encodes_it_once() -> None:
    enc = _SegmentEncoder()
    memo = EncodeMemo(enc, separator_pattern(["|"]))
    assert memo.encode("ab|ab|ab") == [i for s in ["ab", "|", "ab", "|", "ab"] for i in enc.ids(s)]
    assert enc.calls == [["ab", "|"]]  # each once, in one batch
    assert (memo.num_hits, memo.num_misses, len(memo)) == (0, 2, 2)
