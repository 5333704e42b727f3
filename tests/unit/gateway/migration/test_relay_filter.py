"""The armed relay forwards whole events only and strips the token ids the client did not ask for."""

from __future__ import annotations

import orjson

from dpserve.gateway.migration.relay_filter import EventGate, strip_token_ids


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
    gate = EventGate()
    event = b'data: {"a":1,"token_ids":[1]}\n\n'
    assert gate.pass_whole(event[:10]) == b"" and gate.held == event[:10]
    assert gate.pass_whole(event[10:] + event[:3]) == event and gate.held == event[:3]
    assert gate.pass_whole(event[3:]) == event and gate.held == b""
    crlf = b"data: {}\r\n\r\n"
    assert gate.pass_whole(crlf + b"data") == crlf and gate.held == b"data"
