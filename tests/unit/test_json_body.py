"""json_body: the structure bounds of large bodies (exact, at and one past each limit) and the turns
that large parses take."""

from __future__ import annotations

import asyncio

import pytest

from dpserve.errors import HTTPError
from dpserve.json_body import (
    LARGE_BODY_BYTES,
    MAX_JSON_COMMAS,
    MAX_JSON_CONTAINERS,
    MAX_JSON_QUOTES,
    JsonTurns,
    check_json_structure,
    load_json,
)


def _body(items: bytes, count: int, size: int = LARGE_BODY_BYTES) -> bytes:
    """`{"x":"<padding>","y":[<items>]}` of at least `size` bytes; `items` holds `count` of the
    counted byte (its other structure bytes are the body's own: 2 braces/brackets, 4 quotes... )."""
    head, tail = b'{"prompt":"', b'"}'
    raw = head + items * count + tail
    return head + b"a" * max(0, size - len(raw)) + items * count + tail


# Each counted byte, the body's own bytes of that kind (`{"prompt":"..."}`), and its limit.
CASES = [(b"[", 1, MAX_JSON_CONTAINERS), (b"{", 1, MAX_JSON_CONTAINERS), (b'"', 4, MAX_JSON_QUOTES),
         (b",", 0, MAX_JSON_COMMAS)]


@pytest.mark.parametrize("char, own, limit", CASES, ids=["[", "{", "quote", "comma"])
def test_a_large_body_at_a_limit_passes_and_one_byte_more_is_400(char: bytes, own: int, limit: int) -> None:
    check_json_structure(_body(char, limit - own))  # bytes inside a string count too
    with pytest.raises(HTTPError) as refused:
        check_json_structure(_body(char, limit - own + 1))
    assert refused.value.status == 400 and refused.value.code == "json_too_complex"
    assert str(limit) in refused.value.message and str(LARGE_BODY_BYTES) in refused.value.message


def test_brackets_and_braces_count_together() -> None:
    half = MAX_JSON_CONTAINERS // 2
    with pytest.raises(HTTPError):
        check_json_structure(_body(b"[", half) + b" " + b"{" * half)


def test_every_limit_is_above_what_a_small_body_could_hold() -> None:
    """So counting only large bodies refuses nothing a full count would."""
    assert min(MAX_JSON_CONTAINERS, MAX_JSON_QUOTES, MAX_JSON_COMMAS) >= LARGE_BODY_BYTES


def test_load_json_refuses_empty_complex_and_malformed_bodies_with_400() -> None:
    assert load_json(b'{"prompt":"hi"}') == {"prompt": "hi"}
    bombs = b'{"x":[' + b"{}," * (MAX_JSON_CONTAINERS + 1) + b"{}]}"
    for raw, words in ((b"", "empty"), (b'{"prompt":', "not valid JSON"), (bombs, "at most")):
        with pytest.raises(HTTPError) as refused:
            load_json(raw)
        assert refused.value.status == 400 and words in refused.value.message


async def test_small_bodies_are_parsed_at_once_without_yielding() -> None:
    turns = JsonTurns()
    ran: list[str] = []
    other = asyncio.get_running_loop().call_soon(ran.append, "other")
    assert await turns.run(10, lambda: ran.append("parse") or "done") == "done"
    assert ran == ["parse"]  # nothing else ran first: no pass of the loop for a small body
    other.cancel()


async def test_large_parses_take_turns_with_a_pass_of_the_loop_before_each() -> None:
    turns = JsonTurns()
    loop = asyncio.get_running_loop()
    order: list[str] = []

    def parse(name: str) -> str:
        order.append(f"start {name}")
        loop.call_soon(order.append, f"ready during {name}")  # e.g. a /health request arriving
        order.append(f"end {name}")
        return name

    loop.call_soon(order.append, "ready before")
    assert await turns.run(LARGE_BODY_BYTES, parse, "first") == "first"
    results = await asyncio.gather(*(turns.run(LARGE_BODY_BYTES, parse, n) for n in "abc"))
    assert results == ["a", "b", "c"]
    # What was ready ran before the parse; each parse ran whole, and what became ready during one
    # ran before the next began.
    assert order == ["ready before", "start first", "end first", "ready during first",
                     "start a", "end a", "ready during a", "start b", "end b", "ready during b",
                     "start c", "end c", "ready during c"]
