"""The armed relay forwards whole events only, strips the token ids the client did not ask for and
finds the event by which a replica reports a failure."""

from __future__ import annotations

import orjson

from dpserve.gateway.migration.relay_filter import EventGate, failure_start, may_hold_failure, strip_token_ids


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


def _event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def test_finds_a_failure_event_in_every_shape_and_only_there() -> None:
    token = _event({"choices": [{"index": 0, "delta": {"content": "abort"}, "finish_reason": None}]})
    said_error = _event({"choices": [{"index": 0, "text": "error", "finish_reason": "stop"}]})
    abort = _event({"choices": [{"index": 0, "delta": {}, "finish_reason": "abort"}]})
    error = _event({"error": {"message": "x", "code": "engine_down"}})
    old_error = _event({"object": "error", "message": "x", "code": 500})
    for harmless in (token, said_error, token + said_error, b"data: [DONE]\n\n"):
        assert failure_start(harmless) == -1
    assert may_hold_failure(token) and not may_hold_failure(b'data: {"a":"abort!"}\n\n')
    for failure in (abort, error, old_error, abort + error):
        assert failure_start(failure) == 0 and failure_start(token + failure) == len(token)
    assert failure_start((token + error).replace(b"\n\n", b"\r\n\r\n")) == 0
