"""Incremental detokenisation never splits a character; stop strings work across deltas."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from dpserve.serving.detokenizer import IncrementalDetokenizer
from dpserve.serving.stop_strings import StopStringMatcher


class ByteTokenizer:
    """One token per UTF-8 byte: the worst case for incremental decoding."""

    eos_token_ids = (256,)

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, token_ids: Sequence[int]) -> str:
        return bytes(t for t in token_ids if t < 256).decode(errors="replace")

    def apply_chat_template(self, messages: list[dict[str, Any]], *,
                            continue_final_message: bool = False) -> list[int]:
        raise ValueError("no template")


def stream_text(text: str, step: int = 1) -> list[str]:
    detok = IncrementalDetokenizer(ByteTokenizer())
    ids = ByteTokenizer().encode(text)
    pieces = [detok.push(ids[i:i + step]) for i in range(0, len(ids), step)]
    return [*pieces, detok.flush()]


@pytest.mark.parametrize("step", [1, 2, 3])
def test_multibyte_chars_are_never_split(step: int) -> None:
    text = "héllo 世界 🙂!"
    pieces = stream_text(text, step)
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_incomplete_char_is_flushed_at_the_end() -> None:
    detok = IncrementalDetokenizer(ByteTokenizer())
    assert detok.push(list(b"a")) == "a"
    assert detok.push(list("世".encode())[:2]) == ""  # held back: an incomplete character
    assert detok.flush() == "\ufffd"


def test_context_is_never_emitted_and_a_char_it_cut_comes_out_whole() -> None:
    """A token-id prompt (a resumed answer) is left context; "é" split across it and the first
    new token is emitted whole, as vLLM's detokenizer does."""
    detok = IncrementalDetokenizer(ByteTokenizer(), context=list(b"long prompt h"))
    assert detok.push(list(b"i")) == "i"
    cut = list("hé".encode())
    detok = IncrementalDetokenizer(ByteTokenizer(), context=cut[:-1])
    assert detok.num_held == 1  # the context's first byte of "é"
    assert detok.push(cut[-1:]) == "é" and detok.num_held == 0
    assert detok.push(list("世".encode())[:1]) == "" and detok.num_held == 1
    assert detok.push(list("世".encode())[1:]) == "世" and detok.num_held == 0


def feed(matcher: StopStringMatcher, deltas: list[str]) -> tuple[str, bool]:
    out, stopped = "", False
    for d in deltas:
        text, stopped = matcher.push(d)
        out += text
        if stopped:
            break
    if not stopped:
        out += matcher.flush()
    return out, stopped


def test_stop_string_across_deltas_is_cut_and_excluded() -> None:
    assert feed(StopStringMatcher(["END"]), ["abc E", "N", "Dxyz"]) == ("abc ", True)


def test_text_that_may_start_a_stop_is_held_back_then_released() -> None:
    m = StopStringMatcher(["END"])
    assert m.push("abcE") == ("abc", False)
    assert m.push("Nx") == ("ENx", False)
    assert m.flush() == ""


def test_earliest_of_several_stops_wins() -> None:
    assert feed(StopStringMatcher(["zz", "b"]), ["a", "bzz"]) == ("a", True)
    m = StopStringMatcher(["\n\n"])
    assert feed(m, ["line\n", "\nmore"]) == ("line", True)
    assert m.text == "line"


def test_no_stops_passes_everything_through() -> None:
    m = StopStringMatcher([])
    assert m.push("abc") == ("abc", False)
    assert feed(StopStringMatcher(["q"]), ["abc", "de"]) == ("abcde", False)
