"""EncodeMemo: the joined segment ids equal the whole text's, bounded, split as the tokenizer splits."""

from __future__ import annotations

import random

from dpserve.serving.encode_memo import EncodeMemo, separator_pattern


class _CountingEncoder:
    """Each character's code point; counts what it was asked to encode."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[list[int]]:
        self.calls.append(list(texts))
        return [[ord(c) for c in t] for t in texts]


def test_whole_text_is_one_segment_without_a_boundary() -> None:
    enc = _CountingEncoder()
    memo = EncodeMemo(enc)
    assert memo.encode("user\nhello") == [ord(c) for c in "user\nhello"]
    assert memo.encode("user\nhello") == [ord(c) for c in "user\nhello"]
    assert enc.calls == [["user\nhello"]]
    assert (memo.num_hits, memo.num_misses, len(memo), memo.num_chars) == (1, 1, 1, 10)


def test_only_the_new_segments_are_encoded_in_one_batch() -> None:
    enc = _CountingEncoder()
    memo = EncodeMemo(enc, separator_pattern(["<s>", "</s>"]))
    first = "<s>user\nhi</s>\n<s>assistant\n"
    assert memo.encode(first) == [ord(c) for c in first]
    assert enc.calls == [["<s>", "user\nhi", "</s>", "\n", "assistant\n"]]
    second = first + "yo</s>\n<s>user\nmore</s>\n<s>assistant\n"
    assert memo.encode(second) == [ord(c) for c in second]
    assert enc.calls[1] == ["assistant\nyo", "user\nmore"]


def test_equal_to_encoding_the_whole_text_on_random_texts() -> None:
    rng = random.Random(7)
    memo = EncodeMemo(_CountingEncoder(), separator_pattern(["<|im_start|>", "<|im_end|>", "<|im"]), 200)
    for _ in range(500):
        text = "".join(rng.choice(["<|im_start|>", "<|im_end|>", "<|im", "a", " ", "\n", "é"])
                       for _ in range(rng.randint(0, 40)))
        assert memo.encode(text) == [ord(c) for c in text]
    assert memo.num_chars <= 200


def test_longest_separator_wins_where_one_is_a_prefix_of_another() -> None:
    pattern = separator_pattern(["<|im", "<|im_start|>"])
    assert pattern is not None
    assert [s for s in pattern.split("x<|im_start|>y<|imz") if s] == ["x", "<|im_start|>", "y", "<|im", "z"]
    assert separator_pattern([]) is None


def test_least_recently_used_segments_are_forgotten_past_the_bound() -> None:
    enc = _CountingEncoder()
    memo = EncodeMemo(enc, max_chars=160)  # segments up to 160 // 16 = 10 characters are kept
    for word in ("aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"):
        memo.encode(word)
    memo.encode("aaaaaaaaaa")  # used again: now the most recent
    for i in range(14):
        memo.encode(f"{i:010d}")
    assert memo.num_chars <= 160 and len(memo) == 16
    enc.calls.clear()
    memo.encode("aaaaaaaaaa")
    memo.encode("bbbbbbbbbb")
    assert enc.calls == [["bbbbbbbbbb"]]  # b, least recently used, was dropped; a was kept


def test_a_huge_segment_is_encoded_but_not_remembered() -> None:
    enc = _CountingEncoder()
    memo = EncodeMemo(enc, max_chars=1600)
    big = "x" * 101
    assert memo.encode(big) == [ord("x")] * 101
    assert memo.encode(big) == [ord("x")] * 101
    assert len(enc.calls) == 2 and len(memo) == 0 and memo.num_chars == 0


def test_a_text_repeating_one_new_segment_encodes_it_once() -> None:
    enc = _CountingEncoder()
    memo = EncodeMemo(enc, separator_pattern(["|"]))
    assert memo.encode("ab|ab|ab") == [ord(c) for c in "ab|ab|ab"]
    assert enc.calls == [["ab", "|"]]  # each once, in one batch
    assert len(memo) == 2 and memo.num_chars == 3
