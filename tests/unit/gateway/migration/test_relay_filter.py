"""The armed relay forwards whole events only and strips the token ids the client did not ask for."""

from __future__ import annotations

import orjson

from dpserve.gateway.migration.relay_filter import RelayFilter, strip_token_ids


def test_strips_vllm_and_dpserve_token_id_fields() -> None:
    chat = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}, "logprobs": None,
                                    "finish_reason": None, "stop_reason": None, "token_ids": [5, 6]}]}
    plain = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}, "logprobs": None,
                                     "finish_reason": None, "stop_reason": None}]}
    assert strip_token_ids(orjson.dumps(chat)) == orjson.dumps(plain)
    role = orjson.dumps({"id": "c", "choices": [], "prompt_token_ids": [1, 2, 3]})
    assert strip_token_ids(role) == b'{"id":"c","choices":[]}'
    completion = b'{"choices":[{"text":"a","prompt_token_ids":null,"token_ids":[1]}]}'
    assert strip_token_ids(completion) == b'{"choices":[{"text":"a"}]}'
    content = b'{"choices":[{"text":"say ,\\"token_ids\\":[1] please"}]}'  # inside a string: escaped
    assert strip_token_ids(content) == content


def test_holds_back_an_incomplete_event() -> None:
    filt = RelayFilter(strip=True)
    event = b'data: {"a":1,"token_ids":[1]}\n\n'
    assert filt.feed(event[:10]) == b"" and filt.held == event[:10]
    assert filt.feed(event[10:] + event[:3]) == b'data: {"a":1}\n\n'
    assert filt.feed(event[3:]) == b'data: {"a":1}\n\n' and filt.held == b""


def test_keeps_the_ids_a_client_asked_for() -> None:
    event = b'data: {"a":1,"token_ids":[1]}\n\n'
    assert RelayFilter(strip=False).feed(event) == event
