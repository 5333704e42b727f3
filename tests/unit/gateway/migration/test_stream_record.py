"""Relayed events → what the client has (StreamState), over chat and completion streams, bounded."""

from __future__ import annotations

from typing import Any

import orjson

from dpserve.gateway.migration.stream_record import StreamRecord
from dpserve.gateway.migration.stream_state import StreamState, parse_piece


def ev(payload: dict[str, Any] | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


ENV = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 5, "model": "m"}
CHAT = [ev({**ENV, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
            "prompt_token_ids": [1, 2]}),
        ev({**ENV, "choices": [{"index": 0, "delta": {"content": "Hel"}, "token_ids": [7]}]}),
        ev({**ENV, "choices": [{"index": 0, "delta": {"content": "lo"}, "token_ids": [8, 9]}]}),
        ev({**ENV, "choices": [{"index": 0, "delta": {}, "finish_reason": "length", "stop_reason": None,
                                "token_ids": []}]}),
        ev({**ENV, "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}),
        ev("[DONE]")]


def settled(chunks: list[bytes], cap: int = 1 << 20) -> StreamState:
    state = StreamState()
    record = StreamRecord(state, first_stream=True, cap_bytes=cap)
    for chunk in chunks:
        record.add(chunk)
    record.settle()
    return state


def test_a_chat_stream_with_token_ids() -> None:
    st = settled(CHAT)
    assert (st.id, st.created, st.model, st.prompt_ids) == ("chatcmpl-9", 5, "m", [1, 2])
    assert (st.text, st.output_ids, st.ids_missing, st.content_chunks) == ("Hello", [7, 8, 9], False, 2)
    assert (st.role_sent, st.finish_reason, st.done) == (True, "length", True)
    assert st.usage == {"prompt_tokens": 2, "completion_tokens": 3}


def test_chunks_split_anywhere_give_the_same_state_and_a_cut_event_is_dropped() -> None:
    data = b"".join(CHAT[:3])
    pieces = [data[i:i + 7] for i in range(0, len(data), 7)]
    st = settled(pieces)
    assert (st.text, st.output_ids) == ("Hello", [7, 8, 9])
    st = settled([CHAT[0], CHAT[1], CHAT[2][:-5]])  # the last event never completed
    assert (st.text, st.output_ids) == ("Hel", [7])


def test_completion_stream_prompt_ids_in_the_choice_and_missing_ids() -> None:
    env = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}
    first = {"index": 0, "text": "a", "prompt_token_ids": [4], "token_ids": [5]}
    st = settled([ev({**env, "choices": [first]}),
                  ev({**env, "choices": [{"index": 0, "text": "b", "prompt_token_ids": None}]})])
    assert (st.prompt_ids, st.output_ids, st.text, st.ids_missing) == ([4], [5], "ab", True)


def test_later_streams_do_not_change_the_envelope_or_the_prompt() -> None:
    state = StreamState()
    first = StreamRecord(state, first_stream=True)
    first.add(b"".join(CHAT[:2]))
    first.settle()
    later = StreamRecord(state, first_stream=False)
    later.add(ev({"id": "cmpl-x", "object": "text_completion", "created": 9, "model": "m",
                  "choices": [{"index": 0, "text": "!", "prompt_token_ids": [1, 2, 7], "token_ids": [3]}]}))
    later.settle()
    assert (state.id, state.prompt_ids) == ("chatcmpl-9", [1, 2])
    assert (state.text, state.output_ids) == ("Hel!", [7, 3])


def test_error_events_of_both_shapes() -> None:
    assert settled([CHAT[1], ev({"error": {"message": "boom"}})]).error == {"message": "boom"}
    assert parse_piece(b'{"object": "error", "message": "x"}') is not None
    assert parse_piece(b"not json") is None and parse_piece(b"[1]") is None


def test_memory_is_bounded_by_folding_early() -> None:
    big = [ev({**ENV, "choices": [{"index": 0, "delta": {"content": "x" * 100}, "token_ids": [i]}]})
           for i in range(500)]
    state = StreamState()
    record = StreamRecord(state, first_stream=True, cap_bytes=4096)
    for chunk in big:
        record.add(chunk)
        assert record._size <= 4096 + len(chunk)
    record.settle()
    assert state.output_ids == list(range(500)) and len(state.text) == 50_000


def test_reasoning_is_side_text_and_blocks_resuming_until_the_content_begins() -> None:
    thinking = ev({**ENV, "choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}, "token_ids": [5]}]})
    st = settled([*CHAT[:1], thinking])
    assert st.side_texts() == {"reasoning_content": "hmm"} and st.text == "" and st.output_ids == [5]
    assert st.side_text_unresumable and st.content_chunks == 1
    st = settled([*CHAT[:1], thinking, *CHAT[1:]])
    assert st.text == "Hello" and not st.side_text_unresumable
    assert not settled(CHAT).side_parts  # the role chunk's empty content is no side text


def test_an_abort_event_is_a_failure_whatever_it_carries() -> None:
    """Its text and ids never reach the client (the relay cuts before it): they are not the answer."""
    abort = ev({**ENV, "choices": [{"index": 0, "delta": {"content": "lost"}, "finish_reason": "abort",
                                    "token_ids": [4]}]})
    st = settled([*CHAT[:2], abort])
    assert st.aborted and st.text == "Hel" and st.output_ids == [7] and st.finish_reason is None
