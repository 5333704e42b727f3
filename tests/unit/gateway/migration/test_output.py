"""The client's shape of a resumed response: same envelope, no role chunk, vLLM's field order."""

from __future__ import annotations

import orjson

from dpserve.gateway.migration.output import ClientShape, usage_json
from dpserve.gateway.migration.stream_state import StreamState


def payload(event: bytes) -> object:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    return orjson.loads(event[6:])


def test_chat_and_completion_chunks() -> None:
    chat = ClientShape("chat", "chatcmpl-1", 3, "alias", wants_token_ids=False, include_usage=True)
    assert payload(chat.chunk("hi", [5], None)) == {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 3, "model": "alias",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "logprobs": None, "finish_reason": None,
                     "stop_reason": None}]}
    last = payload(chat.chunk("", [], "stop", "END"))
    choice = last["choices"][0]  # type: ignore[index]
    assert choice["delta"] == {} and choice["stop_reason"] == "END"
    completion = ClientShape("completion", "cmpl-1", 3, "m", wants_token_ids=True, include_usage=False)
    assert payload(completion.chunk("x", [9], None))["choices"] == [  # type: ignore[index]
        {"index": 0, "text": "x", "logprobs": None, "finish_reason": None, "stop_reason": None,
         "token_ids": [9]}]
    assert payload(chat.usage_chunk(usage_json(2, 3, 1))) == {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 3, "model": "alias", "choices": [],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5,
                  "prompt_tokens_details": {"cached_tokens": 1}}}


def test_whole_bodies() -> None:
    st = StreamState(prompt_ids=[1], output_ids=[4, 5], text_parts=["a", "b"], finish_reason="length")
    chat = orjson.loads(ClientShape("chat", "c", 1, "m", True, False).whole(st, usage_json(1, 2, None)))
    assert chat["object"] == "chat.completion" and chat["prompt_token_ids"] == [1]
    assert chat["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "ab"},
                                "logprobs": None, "finish_reason": "length", "stop_reason": None,
                                "token_ids": [4, 5]}]
    text = orjson.loads(ClientShape("completion", "c", 1, "m", False, False).whole(st, None))
    assert text["object"] == "text_completion" and text["choices"][0]["text"] == "ab"
    assert "token_ids" not in text["choices"][0] and "prompt_token_ids" not in text
