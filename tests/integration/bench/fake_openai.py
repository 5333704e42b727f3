"""A small in-process OpenAI-compatible server for bench tests: streams `max_tokens` words, reports
usage, tags responses with x-dpserve-worker, and counts a toy prefix cache in vLLM's metric names."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from dpserve.errors import error_middleware, error_response
from dpserve.http_names import WORKER_HEADER

MODEL = "fake-model"


@dataclass
class FakeState:
    """What the fake saw; tests assert on it."""

    worker_id: str
    token_delay_s: float = 0.0
    fail_every: int | None = None  # answer 500 to every Nth request
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    prompts: list[list[str]] = field(default_factory=list)
    queries: int = 0
    hits: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


STATE = web.AppKey("state", FakeState)


def _prompt_words(body: dict[str, Any]) -> list[str]:
    if "messages" in body:
        return " ".join(str(m["content"]) for m in body["messages"]).split()
    return str(body["prompt"]).split()


def _count_cache(state: FakeState, words: list[str]) -> None:
    best = 0
    for seen in state.prompts:
        n = 0
        while n < min(len(seen), len(words)) and seen[n] == words[n]:
            n += 1
        best = max(best, n)
    state.prompts.append(words)
    state.queries += len(words)
    state.hits += best


def _chunk(chat: bool, text: str | None, usage: dict[str, int] | None = None) -> bytes:
    if text is None:
        choices: list[Any] = []
    elif chat:
        choices = [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    else:
        choices = [{"index": 0, "text": text, "finish_reason": None}]
    obj: dict[str, Any] = {"id": "x", "model": MODEL, "choices": choices}
    if usage is not None:
        obj["usage"] = usage
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _generate(request: web.Request, chat: bool) -> web.StreamResponse:
    state = request.app[STATE]
    state.in_flight += 1
    state.max_in_flight = max(state.max_in_flight, state.in_flight)
    try:
        return await _answer(request, state, chat)
    finally:
        state.in_flight -= 1


async def _answer(request: web.Request, state: FakeState, chat: bool) -> web.StreamResponse:
    body = await request.json()
    state.requests.append(body)
    state.headers.append(dict(request.headers))
    if state.fail_every and len(state.requests) % state.fail_every == 0:
        return error_response(500, "injected failure")
    words = _prompt_words(body)
    _count_cache(state, words)
    tokens = [f" t{i}" for i in range(int(body.get("max_tokens", 16)))]
    usage = {"prompt_tokens": len(words), "completion_tokens": len(tokens),
             "total_tokens": len(words) + len(tokens)}
    headers = {WORKER_HEADER: state.worker_id}
    if not body.get("stream"):
        text = "".join(tokens)
        choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        return web.json_response({"choices": [choice], "usage": usage}, headers=headers)
    resp = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
    await resp.prepare(request)
    if chat:
        await resp.write(_chunk(chat, ""))  # role-only first chunk, as vLLM sends
    for token in tokens:
        await asyncio.sleep(state.token_delay_s)
        await resp.write(_chunk(chat, token))
    if (body.get("stream_options") or {}).get("include_usage"):
        await resp.write(_chunk(chat, None, usage))
    await resp.write(b"data: [DONE]\n\n")
    return resp


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    text = (f"vllm:prefix_cache_queries_total{{model_name=\"{MODEL}\"}} {state.queries}\n"
            f"vllm:prefix_cache_hits_total{{model_name=\"{MODEL}\"}} {state.hits}\n")
    return web.Response(text=text)


def make_app(state: FakeState) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[STATE] = state
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/health", _health)
    return app
