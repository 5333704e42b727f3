"""Ids released with exactly their text: what a client received is always text(ids received)."""

from __future__ import annotations

import pytest

from dpserve.serving.detokenizer import IncrementalDetokenizer
from dpserve.serving.stop_strings import StopStringMatcher
from dpserve.serving.token_alignment import TokenTextAligner
from tests.unit.serving.test_detokenizer import ByteTokenizer


def run(ids_per_step: list[list[int]], stops: list[str]) -> list[tuple[str, tuple[int, ...]]]:
    """Generation's pipeline without an engine: detokenizer → stop matcher → aligner; the last
    step finishes the output."""
    tok = ByteTokenizer()
    detok, matcher, aligner = IncrementalDetokenizer(tok), StopStringMatcher(stops), TokenTextAligner()
    out, generated = [], 0
    for index, step in enumerate(ids_per_step):
        generated += len(step)
        decoded = detok.push(step)
        text, stopped = matcher.push(decoded)
        if stopped or index == len(ids_per_step) - 1:
            if not stopped:
                text += matcher.push(detok.flush())[0] + matcher.flush()
            out.append(aligner.finish(step, text))
            return out
        out.append(aligner.step(step, decoded, generated - detok.num_held, text))
    return out


def sent_so_far(pieces: list[tuple[str, tuple[int, ...]]]) -> list[tuple[str, list[int]]]:
    text, ids, seen = "", [], []
    for piece_text, piece_ids in pieces:
        text += piece_text
        ids += piece_ids
        seen.append((text, list(ids)))
    return seen


@pytest.mark.parametrize("stops", [[], ["END"], ["world!", "wor"], ["🙂x"]])
def test_every_prefix_sent_is_the_text_of_the_ids_sent(stops: list[str]) -> None:
    ids = list("héllo 世界 🙂 world!".encode())
    pieces = run([ids[i:i + 2] for i in range(0, len(ids), 2)], stops)
    for text, sent_ids in sent_so_far(pieces)[:-1]:  # the finish may drop a stop string's text
        assert ByteTokenizer().decode(sent_ids) == text


def test_text_that_may_start_a_stop_string_holds_its_ids_back() -> None:
    pieces = run([list(b"ab"), list(b" "), list(b"E"), list(b"N"), list(b"x"), list(b"!")], ["END"])
    assert pieces[:2] == [("ab", tuple(b"ab")), (" ", (ord(" "),))]
    assert pieces[2:4] == [("", ()), ("", ())]  # "E", "EN" may start END: held with their ids
    assert pieces[4] == ("ENx", tuple(b"ENx"))
    assert pieces[5] == ("!", (ord("!"),))


def test_an_incomplete_char_holds_its_ids_back_and_a_stop_sends_all_ids() -> None:
    world = list("世".encode())
    pieces = run([list(b"a"), world[:1], world[1:], list(b"ENDtail")], ["END"])
    assert pieces[:3] == [("a", (ord("a"),)), ("", ()), ("世", tuple(world))]
    assert pieces[3] == ("", tuple(b"ENDtail"))  # the stop string's text is dropped, its ids not


def test_a_token_cut_by_the_held_text_waits_for_the_next_boundary() -> None:
    """One step's text "xE" straddles the matcher's cut: its ids wait until "E" is released."""
    pieces = run([list(b"xE"), list(b"y"), list(b".")], ["END"])
    assert pieces[0] == ("", ())
    assert pieces[1] == ("xEy", tuple(b"xEy"))
