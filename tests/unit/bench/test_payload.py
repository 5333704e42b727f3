"""Request bodies and headers: history per turn, streaming usage, ignore_eos, session header."""

from __future__ import annotations

from dpserve.bench.conversation import Conversation, Turn
from dpserve.bench.payload import RequestOptions, request_body, request_headers
from dpserve.http_names import SESSION_HEADER

CONV = Conversation(turns=(Turn("hello there", 3), Turn("and then", 4)), system_text="be brief",
                    session_id="s1")


def test_chat_body_carries_history() -> None:
    opts = RequestOptions(endpoint="chat", model="m", ignore_eos=True)
    body = request_body(opts, CONV, 1, ["first reply"])
    assert body["messages"] == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "first reply"}, {"role": "user", "content": "and then"}]
    assert body["max_tokens"] == 4 and body["model"] == "m" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True
    assert opts.path == "/v1/chat/completions"


def test_completions_prompt_is_prefix_stable() -> None:
    opts = RequestOptions(endpoint="completions", model="m", stream=False)
    first = request_body(opts, CONV, 0, [])["prompt"]
    second = request_body(opts, CONV, 1, ["reply"])
    assert second["prompt"].startswith(first)
    assert second["prompt"] == "be brief\n\nhello there\n\nreply\n\nand then"
    assert "stream_options" not in second and "ignore_eos" not in second
    assert opts.path == "/v1/completions"


def test_headers() -> None:
    opts = RequestOptions(endpoint="chat", model="m", api_key="k")
    assert request_headers(opts, CONV) == {SESSION_HEADER: "s1", "Authorization": "Bearer k"}
    assert request_headers(RequestOptions(endpoint="chat", model="m"), Conversation(turns=())) == {}
