"""OpenAI request parsing: defaults, accepted shapes, and every rejected field with its param."""

from __future__ import annotations

from typing import Any

import pytest

from dpserve.protocol import (
    DEFAULT_COMPLETION_MAX_TOKENS,
    RequestError,
    parse_chat_request,
    parse_completion_request,
)
from dpserve.serving.limits import RequestLimits

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def chat(**extra: Any) -> dict[str, Any]:
    return {**CHAT, **extra}


def test_chat_defaults_and_unknown_fields_ignored() -> None:
    req = parse_chat_request(chat(frequency_penalty=0.5, whatever={"x": 1}, logprobs=False, tools=[]))
    f = req.fields
    assert (f.model, f.stream, f.include_usage, f.max_tokens) == (None, False, False, None)
    # left out: None, so the model's generation config (or the API default) decides
    assert (f.temperature, f.top_p, f.top_k, f.seed) == (None, None, None, None)
    assert (f.stop, f.ignore_eos) == ((), False)
    assert req.messages == [{"role": "user", "content": "hi"}]


def test_completion_defaults_to_16_tokens_and_accepts_token_ids() -> None:
    req = parse_completion_request({"prompt": [1, 2, 3]})
    assert req.prompt == (1, 2, 3)
    assert req.fields.max_tokens == DEFAULT_COMPLETION_MAX_TOKENS
    assert parse_completion_request({"prompt": ["one"]}).prompt == "one"
    assert parse_completion_request({"prompt": [[4, 5]]}).prompt == (4, 5)
    assert parse_completion_request({"prompt": "x", "max_tokens": None}).fields.max_tokens is None


def test_all_sampling_fields_are_read() -> None:
    f = parse_chat_request(chat(model="m", stream=True, stream_options={"include_usage": True},
                                max_completion_tokens=7, max_tokens=99, temperature=0, top_p=0.5,
                                top_k=-1, seed=3, stop="x", stop_token_ids=[5], ignore_eos=True,
                                user="u", n=1)).fields
    assert f.model == "m" and f.stream and f.include_usage
    assert f.max_tokens == 7  # max_completion_tokens wins, as in OpenAI's newer API
    assert (f.temperature, f.top_p, f.top_k, f.seed) == (0.0, 0.5, -1, 3)  # -1: off, explicitly
    assert (f.stop, f.stop_token_ids, f.ignore_eos, f.user) == (("x",), (5,), True, "u")


def test_return_token_ids_and_chat_template_switches() -> None:
    assert not parse_chat_request(chat()).fields.return_token_ids
    req = parse_chat_request(chat(return_token_ids=True, continue_final_message=True,
                                  add_generation_prompt=False))
    assert req.fields.return_token_ids and req.continue_final_message and not req.add_generation_prompt
    assert parse_completion_request({"prompt": "x", "return_token_ids": True}).fields.return_token_ids


def test_content_parts_are_joined() -> None:
    req = parse_chat_request({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert req.messages[0]["content"] == "ab"


@pytest.mark.parametrize(("extra", "param"), [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_completion_tokens": -1}, "max_completion_tokens"),
    ({"n": 2}, "n"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": -2}, "top_k"),
    ({"stop": 5}, "stop"),
    ({"stop": ["a", 1]}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),  # vLLM's and OpenAI's limit: 4
    ({"stop": "x" * 1025}, "stop"),
    ({"stop": [None] * 50_000}, "stop"),
    ({"stop_token_ids": list(range(1025))}, "stop_token_ids"),
    ({"stop_token_ids": [True]}, "stop_token_ids"),
    ({"temperature": 10**400}, "temperature"),
    ({"top_p": float("nan")}, "top_p"),
    ({"temperature": float("inf")}, "temperature"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"seed": 1.5}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"logprobs": True}, "logprobs"),
    ({"echo": True}, "echo"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"model": 3}, "model"),
    ({"return_token_ids": 1}, "return_token_ids"),
    ({"continue_final_message": "yes"}, "continue_final_message"),
    ({"continue_final_message": True}, "continue_final_message"),  # add_generation_prompt too
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"content": "x"}]}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
])
def test_chat_rejects(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_chat_request(chat(**extra))
    assert info.value.param == param
    assert param.split("_")[0] in info.value.message


@pytest.mark.parametrize("prompt", [None, "", [], [1, "a"], [-1], ["a", "b"], [[1], [2]], 3, [True]])
def test_completion_rejects_prompt(prompt: Any) -> None:
    with pytest.raises(RequestError) as info:
        parse_completion_request({"prompt": prompt})
    assert info.value.param == "prompt"


def test_body_must_be_an_object() -> None:
    with pytest.raises(RequestError, match="JSON object"):
        parse_chat_request([1, 2])
    with pytest.raises(RequestError, match="messages"):
        parse_chat_request({})


def test_stop_limits_come_from_the_replica_flags() -> None:
    limits = RequestLimits(max_stop_strings=1, max_stop_string_chars=3, max_stop_token_ids=2)
    assert parse_chat_request(chat(stop=["abc"], stop_token_ids=[1, 2]), limits).fields.stop == ("abc",)
    for extra, message in (({"stop": ["a", "b"]}, "at most 1 strings"),
                           ({"stop": "abcd"}, "at most 3 characters"),
                           ({"stop_token_ids": [1, 2, 3]}, "at most 2 ids")):
        with pytest.raises(RequestError) as info:
            parse_chat_request(chat(**extra), limits)
        assert info.value.param in extra
        assert message in info.value.message


def test_duplicate_stops_are_dropped_in_order() -> None:
    f = parse_chat_request(chat(stop=["b", "a", "b"], stop_token_ids=[5, 3, 5])).fields
    assert (f.stop, f.stop_token_ids) == (("b", "a"), (5, 3))


def test_a_huge_client_string_is_not_echoed_back_whole() -> None:
    with pytest.raises(RequestError) as info:
        parse_chat_request({"messages": [{"role": "x" * 100_000}]})
    assert len(info.value.message) < 300
