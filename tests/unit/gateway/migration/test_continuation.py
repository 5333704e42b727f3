"""The request that resumes a cut response: token-exact on /v1/completions, else text-level."""

from __future__ import annotations

from typing import Any

import orjson

from dpserve.gateway.migration.continuation import (
    Continuation,
    build_continuation,
    max_tokens_of,
    remaining_tokens,
)
from dpserve.gateway.migration.stream_state import StreamState
from dpserve.http_names import CHAT_PATH

CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": True,
             "stream_options": {"include_usage": False}, "temperature": 0, "seed": 7, "stop": ["END"],
             "max_completion_tokens": 10, "min_tokens": 4, "user": "u", "tool_choice": "none",
             "return_token_ids": False, "ignore_eos": True}


def state(ids: bool = True, **fields: Any) -> StreamState:
    st = StreamState(prompt_ids=[1, 2] if ids else None, output_ids=[7, 8, 9] if ids else [],
                     text_parts=["a", "b", "c"], content_chunks=3, ids_missing=not ids)
    for k, v in fields.items():
        setattr(st, k, v)
    return st


def body_of(cont: Continuation | str) -> dict[str, Any]:
    assert isinstance(cont, Continuation)
    out = orjson.loads(cont.body)
    assert isinstance(out, dict)
    return out


def test_token_exact_chat_continuation() -> None:
    cont = build_continuation(CHAT_BODY, "/v1/chat/completions", state(), "<|user|>q")
    assert isinstance(cont, Continuation)
    assert (cont.path, cont.mode) == ("/v1/completions", "token")
    assert cont.route_text == "<|user|>q<|assistant|>abc"
    assert body_of(cont) == {
        "model": "m", "prompt": [1, 2, 7, 8, 9], "max_tokens": 7, "min_tokens": 1, "temperature": 0,
        "seed": 7, "stop": ["END"], "user": "u", "ignore_eos": True, "stream": True,
        "stream_options": {"include_usage": True}, "return_token_ids": True}


def test_no_limit_stays_no_limit_and_completions_default_to_16() -> None:
    chat = {"messages": [{"role": "user", "content": "q"}]}
    assert body_of(build_continuation(chat, "/v1/chat/completions", state(), ""))["max_tokens"] is None
    assert remaining_tokens(chat, "/v1/chat/completions", state()) is None
    completion = {"prompt": "x"}
    assert body_of(build_continuation(completion, "/v1/completions", state(), ""))["max_tokens"] == 13
    assert remaining_tokens({"prompt": "x", "max_tokens": 3}, "/v1/completions", state()) == 0
    assert remaining_tokens({"prompt": "x", "max_tokens": None}, "/v1/completions", state()) is None


def test_text_level_chat_continues_the_assistant_message() -> None:
    cont = build_continuation(CHAT_BODY, "/v1/chat/completions", state(ids=False), "")
    body = body_of(cont)
    assert isinstance(cont, Continuation) and (cont.path, cont.mode) == ("/v1/chat/completions", "text")
    assert body["messages"] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "abc"}]
    assert body["continue_final_message"] and body["add_generation_prompt"] is False
    assert (body["max_tokens"], "max_completion_tokens" in body, body["stream"]) == (7, False, True)
    again = build_continuation({**CHAT_BODY, "messages": body["messages"], "continue_final_message": True},
                               "/v1/chat/completions", state(ids=False), "")
    assert body_of(again)["messages"][-1] == {"role": "assistant", "content": "abcabc"}


def test_text_level_completion_appends_to_a_text_prompt_only() -> None:
    body = body_of(build_continuation({"prompt": ["Once"], "max_tokens": 5}, "/v1/completions",
                                      state(ids=False), "Once"))
    assert (body["prompt"], body["max_tokens"]) == ("Onceabc", 2)
    assert build_continuation({"prompt": [4, 5]}, "/v1/completions", state(ids=False), "") == \
        "token_prompt_without_ids"


def test_a_null_max_completion_tokens_gives_way_to_max_tokens() -> None:
    body = {**CHAT_BODY, "max_completion_tokens": None, "max_tokens": 8}
    assert body_of(build_continuation(body, CHAT_PATH, state(), "q"))["max_tokens"] == 5
    assert remaining_tokens(body, CHAT_PATH, state()) == 5


def test_max_tokens_is_read_as_an_openai_server_reads_it() -> None:
    for value, limit in ((8.0, 8), (True, 1), (8.5, None), ("8", None), (None, None), (1e300, None),
                         (2**64 - 1, 2**64 - 1)):
        assert max_tokens_of({"max_tokens": value}, CHAT_PATH) == limit, value
    assert max_tokens_of({"max_tokens": 3, "max_completion_tokens": 5}, CHAT_PATH) == 5
