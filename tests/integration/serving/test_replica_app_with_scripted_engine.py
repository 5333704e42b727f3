"""The replica app over a scripted EngineClient: UTF-8 safe streaming, stop strings that span
tokens, engine failures as JSON (one request's failure a 4xx, the engine's a 503, never a 500),
template errors as 400 — all over a real socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dpserve.serving.app import create_replica_app
from dpserve.serving.engine_client import EngineError, EngineStats, GenerateRequest, TokenDelta

OUTPUT = "héllo wörld 🙂 STOP after"


class ByteTokenizer:
    eos_token_ids = (256,)

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, token_ids: Sequence[int]) -> str:
        if 300 in token_ids:
            raise KeyError("token 300 breaks the decoder")
        return bytes(t for t in token_ids if t < 256).decode(errors="replace")

    def apply_chat_template(self, messages: list[dict[str, Any]], *,
                            continue_final_message: bool = False) -> list[int]:
        if any(m["role"] not in ("user", "system", "assistant") for m in messages):
            raise ValueError(f"unsupported role {messages[0]['role']!r}")
        return self.encode("".join(m["content"] for m in messages))


# prompt → how the scripted engine fails it after two tokens
FAILURES = {b"fail": EngineError("sampling failed for this request"),
            b"down": EngineError("the engine core stopped", engine_down=True)}


class ScriptedEngine:
    """Emits OUTPUT one UTF-8 byte per delta; fails when the prompt says 'boom' (raises), 'bad'
    (refuses the input), 'fail' or 'down' (an error delta), 'undecodable' (emits token 300)."""

    def __init__(self) -> None:
        self.tokenizer = ByteTokenizer()
        self.max_model_len = 1000
        self.started = False
        self.closed_early = 0

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def stats(self) -> EngineStats:
        return EngineStats()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        prompt = bytes(request.prompt_token_ids)
        if prompt == b"boom":
            raise RuntimeError("engine exploded")
        if prompt == b"bad":
            raise ValueError("prompt token ids must be in [0, 256)")
        data = OUTPUT.encode()[:request.sampling.max_tokens]
        finished = False
        try:
            for i, byte in enumerate(data):
                if i == 2 and prompt in FAILURES:
                    finished = True
                    yield TokenDelta([], "abort", error=FAILURES[prompt])
                    return
                if i == 2 and prompt == b"undecodable":
                    byte = 300
                stop = byte in request.sampling.stop_token_ids
                last = i == len(data) - 1 or stop
                finished = last
                yield TokenDelta([byte], "stop" if stop else "length" if last else None,
                                 num_prompt_tokens=len(request.prompt_token_ids) if i == 0 else 0)
                if stop:
                    return
        finally:
            if not finished:
                self.closed_early += 1


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[Any, Any], ScriptedEngine]]:
    engine = ScriptedEngine()
    app = create_replica_app(engine, "scripted")
    async with TestClient(TestServer(app)) as tc:
        yield tc, engine
    assert not engine.started


async def sse_texts(resp: Any) -> list[str]:
    texts = []
    async for raw in resp.content:
        line = raw.strip()
        if line.startswith(b"data: {"):
            chunk = json.loads(line[6:])
            texts += [c.get("text", "") for c in chunk["choices"]]
    return texts


async def test_stream_never_sends_broken_utf8(client: tuple[TestClient[Any, Any], ScriptedEngine]) -> None:
    tc, _ = client
    resp = await tc.post("/v1/completions", json={"prompt": "x", "max_tokens": 100, "stream": True})
    texts = await sse_texts(resp)
    assert "".join(texts) == OUTPUT
    assert all("\ufffd" not in t for t in texts)


async def test_stop_string_spanning_tokens_aborts_the_engine(
        client: tuple[TestClient[Any, Any], ScriptedEngine]) -> None:
    tc, engine = client
    resp = await tc.post("/v1/completions", json={"prompt": "x", "max_tokens": 100, "stop": "STOP"})
    body = await resp.json()
    assert body["choices"][0] == {"index": 0, "text": "héllo wörld 🙂 ", "logprobs": None,
                                  "finish_reason": "stop", "stop_reason": "STOP"}
    assert body["usage"]["completion_tokens"] == len("héllo wörld 🙂 STOP".encode())
    assert engine.closed_early == 1


async def test_a_broken_engine_client_is_a_json_503(
        client: tuple[TestClient[Any, Any], ScriptedEngine]) -> None:
    tc, _ = client
    resp = await tc.post("/v1/completions", json={"prompt": "boom"})
    assert resp.status == 503  # the engine, not the request: a gateway retries it elsewhere
    assert "engine exploded" in (await resp.json())["error"]["message"]
    resp = await tc.post("/v1/completions", json={"prompt": "boom", "stream": True})
    body = await resp.text()
    assert '"error"' in body and body.endswith("data: [DONE]\n\n")


@pytest.mark.parametrize(("prompt", "status", "message"), [
    ("fail", 422, "sampling failed"),
    ("down", 503, "engine core stopped"),
    ("undecodable", 422, "breaks the decoder"),
    ("bad", 400, "must be in"),
])
async def test_a_failed_request_gets_its_own_json_error_and_the_next_one_is_served(
        client: tuple[TestClient[Any, Any], ScriptedEngine], prompt: str, status: int, message: str) -> None:
    tc, _ = client
    resp = await tc.post("/v1/completions", json={"prompt": prompt, "max_tokens": 50})
    assert resp.status == status
    error = (await resp.json())["error"]
    assert message in error["message"] and error["type"]
    resp = await tc.post("/v1/completions", json={"prompt": "x", "max_tokens": 5})
    assert resp.status == 200 and (await resp.json())["choices"][0]["text"] == OUTPUT.encode()[:5].decode()
    assert (await tc.get("/health")).status == 200


@pytest.mark.parametrize("prompt", ["fail", "down", "undecodable"])
async def test_a_stream_that_fails_ends_with_abort_an_error_event_and_done(
        client: tuple[TestClient[Any, Any], ScriptedEngine], prompt: str) -> None:
    tc, _ = client
    resp = await tc.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": prompt}], "max_tokens": 50, "stream": True})
    assert resp.status == 200
    events = [line[6:] for line in (await resp.text()).split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] in ("request_failed", "engine_down")
    last_chunk = json.loads(events[-3])
    assert last_chunk["choices"][0]["finish_reason"] == "abort"


async def test_template_error_is_400(client: tuple[TestClient[Any, Any], ScriptedEngine]) -> None:
    tc, _ = client
    resp = await tc.post("/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]})
    assert resp.status == 400
    assert "wizard" in (await resp.json())["error"]["message"]


async def test_max_tokens_defaults_to_remaining_context_for_chat(
        client: tuple[TestClient[Any, Any], ScriptedEngine]) -> None:
    tc, _ = client
    resp = await tc.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hey"}]})
    body = await resp.json()
    assert body["choices"][0]["message"]["content"] == OUTPUT
    assert body["usage"]["prompt_tokens"] == 3


async def test_stop_token_id_is_reported_as_stop_reason(
        client: tuple[TestClient[Any, Any], ScriptedEngine]) -> None:
    tc, _ = client
    resp = await tc.post("/v1/completions", json={"prompt": "x", "max_tokens": 100,
                                                  "stop_token_ids": [ord("w")]})
    choice = (await resp.json())["choices"][0]
    assert (choice["text"], choice["finish_reason"], choice["stop_reason"]) == ("héllo w", "stop", ord("w"))


async def sse_chunks(resp: Any) -> list[dict[str, Any]]:
    out = []
    async for raw in resp.content:
        line = raw.strip()
        if line.startswith(b"data: {"):
            out.append(json.loads(line[6:]))
    return out


async def test_return_token_ids_has_vllms_shape_and_ids_always_match_the_text_sent(
        client: tuple[TestClient[Any, Any], ScriptedEngine]) -> None:
    """Chat: prompt ids at the top of the role chunk, `token_ids` in each choice; completions:
    prompt ids in the first choice. Every prefix of the stream: text == decode(ids), even while
    a multi-byte char or a possible stop string ("é" then "wö..." vs stop "wörlX") is held back."""
    tc, _ = client
    resp = await tc.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hey"}], "stream": True, "return_token_ids": True,
        "stop": ["wörlX", "🙂 STOPX"], "max_tokens": 100})
    chunks = await sse_chunks(resp)
    assert chunks[0]["prompt_token_ids"] == list(b"hey") and "token_ids" not in chunks[0]["choices"][0]
    text, ids = "", []
    for chunk in chunks[1:]:
        choice = chunk["choices"][0]
        text += choice["delta"].get("content", "")
        ids += choice["token_ids"]
        assert text == bytes(ids).decode(), chunk
    assert text == OUTPUT and chunks[-1]["choices"][0]["finish_reason"] == "length"
    resp = await tc.post("/v1/completions", json={"prompt": "ab", "stream": True, "return_token_ids": True,
                                                  "max_tokens": 4})
    chunks = await sse_chunks(resp)
    assert chunks[0]["choices"][0]["prompt_token_ids"] == list(b"ab")
    assert all("prompt_token_ids" not in c["choices"][0] for c in chunks[1:])
    assert [c["choices"][0]["token_ids"] for c in chunks] == [[104], [195, 169], [108]]


async def test_return_token_ids_non_streaming_and_absent_when_not_asked(
        client: tuple[TestClient[Any, Any], ScriptedEngine]) -> None:
    tc, _ = client
    resp = await tc.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hey"}], "return_token_ids": True, "max_tokens": 3})
    body = await resp.json()
    assert body["prompt_token_ids"] == list(b"hey") and body["choices"][0]["token_ids"] == [104, 195, 169]
    resp = await tc.post("/v1/completions", json={"prompt": "ab", "max_tokens": 2, "return_token_ids": True})
    choice = (await resp.json())["choices"][0]
    assert (choice["prompt_token_ids"], choice["token_ids"]) == (list(b"ab"), [104, 195])
    resp = await tc.post("/v1/completions", json={"prompt": "ab", "max_tokens": 2, "stream": True})
    assert all("token_ids" not in c["choices"][0] for c in await sse_chunks(resp))


async def test_continue_final_message_and_its_conflict_with_add_generation_prompt(
        client: tuple[TestClient[Any, Any], ScriptedEngine]) -> None:
    tc, _ = client
    messages = [{"role": "user", "content": "hey"}, {"role": "assistant", "content": "ok"}]
    resp = await tc.post("/v1/chat/completions", json={"messages": messages, "continue_final_message": True})
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "continue_final_message"
    resp = await tc.post("/v1/chat/completions", json={"messages": messages, "continue_final_message": True,
                                                       "add_generation_prompt": False, "max_tokens": 1})
    assert resp.status == 200 and (await resp.json())["usage"]["prompt_tokens"] == 5
