"""An in-process fake replica (aiohttp on 127.0.0.1) with failure knobs, for gateway tests."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from dpserve.errors import error_body
from dpserve.http_server import bind_socket


@dataclass
class Knobs:
    """Failure and shape knobs; tests flip them while the worker runs."""

    fail_first_n: int = 0            # answer 503 to the first N completion requests
    fail_status: int = 503
    hang: bool = False               # completions, /health and /metrics never answer (a hung process)
    slow_first_byte_s: float = 0.0   # delay before the response starts
    die_after_chunks: int | None = None  # stream: abort the connection after this many chunks
    chunks: int = 5                  # stream: content chunks before the final one
    chunk_delay_s: float = 0.0
    pad: int = 0                     # stream: extra characters in every content chunk
    health_status: int = 200
    running: int = 0                 # gauges on /metrics
    waiting: int = 0
    model: str = "fake-model"        # the id /v1/models lists
    token_ids: bool = False          # honour `return_token_ids` (vLLM's shape; see token_stream_chunks)
    stall_after_chunks: int | None = None  # stream: go silent after this many chunks (health still fine)
    # stream: after this many chunks, fail as a dpserve replica does (an "abort" finish chunk, an
    # error event with `fail_code`, [DONE])
    fail_after_chunks: int | None = None
    fail_code: str = "engine_down"
    fail_coalesced: bool = False     # ... in the same write as the chunk before it
    fail_old_shape: bool = False     # ... as vLLM's older error event, `{"object": "error", ...}`, alone
    fail_once: bool = False          # ... then no more (workers sharing their Knobs: the first to fail)
    fail_unterminated: bool = False  # ... its error event the last bytes, without their blank line
    crlf: bool = False               # stream: events end with CRLF CRLF (sse-starlette's default)
    comment_first: bool = False      # stream: an SSE comment line before the first event
    reasoning_tokens: int = 0        # token stream: the first N answer tokens are `reasoning_content`
    token_text: str | None = None    # token stream: every answer token's text (default f"{name}-{i} ")
    max_model_len: int | None = None  # ... and its card's max_model_len, if set
    info: str = ""                   # labels of a vllm:cache_config_info line on /metrics, if set


@dataclass
class Stats:
    requests: int = 0       # completion requests received
    finished: int = 0       # completion responses fully written
    cancelled: int = 0      # handlers cancelled because the gateway disconnected
    active: int = 0
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of each completion request
    peers: set[tuple[str, int]] = field(default_factory=set)  # client ends of the connections used


class FakeWorker:
    """`await start()` → url; `await kill()` drops every connection and stops listening;
    `await revive()` listens again on the same port."""

    _ids = itertools.count()

    def __init__(self, name: str | None = None, **knobs: Any) -> None:
        self.name = name or f"fake{next(self._ids)}"
        self.knobs = Knobs(**knobs)
        self.stats = Stats()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> str:
        app = web.Application(handler_args={"handler_cancellation": True})
        app.router.add_post("/v1/chat/completions", self._completion)
        app.router.add_post("/v1/completions", self._completion)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._listen()
        return self.url

    async def _listen(self) -> None:
        assert self._runner is not None
        sock = bind_socket("127.0.0.1", self.port)
        self.port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    async def kill(self) -> None:
        """Like a crashed process: in-flight and idle connections reset, new ones refused."""
        assert self._runner is not None and self._site is not None
        await self._site.stop()
        for handler in self._runner.server.connections if self._runner.server else []:
            if handler.transport is not None:
                handler.transport.abort()
        self._site = None

    async def revive(self) -> None:
        await self._listen()

    async def stop(self) -> None:
        if self._runner is not None:
            if self._site is not None:
                await self.kill()
            await self._runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        while self.knobs.hang:
            await asyncio.sleep(0.05)
        return web.Response(status=self.knobs.health_status, text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        k = self.knobs
        while k.hang:
            await asyncio.sleep(0.05)
        text = (f'vllm:num_requests_running{{model_name="fake"}} {k.running}\n'
                f'vllm:num_requests_waiting{{model_name="fake"}} {k.waiting}\n'
                f'vllm:kv_cache_usage_perc{{model_name="fake"}} 0.25\n')
        if k.info:
            text += f"vllm:cache_config_info{{{k.info}}} 1\n"
        return web.Response(text=text)

    async def _models(self, request: web.Request) -> web.Response:
        card: dict[str, Any] = {"id": self.knobs.model, "object": "model"}
        if self.knobs.max_model_len is not None:
            card["max_model_len"] = self.knobs.max_model_len
        return web.json_response({"object": "list", "data": [card]})

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.stats.requests += 1
        self.stats.bodies.append(raw)
        self.stats.headers.append(dict(request.headers))
        if request.transport is not None:
            self.stats.peers.add(request.transport.get_extra_info("peername"))
        self.stats.active += 1
        try:
            return await self._answer(request, orjson.loads(raw))
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise
        finally:
            self.stats.active -= 1

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        k = self.knobs
        if k.fail_first_n > 0:
            k.fail_first_n -= 1
            return web.json_response({"error": {"message": "busy", "type": "x", "code": k.fail_status}},
                                     status=k.fail_status)
        while k.hang:
            await asyncio.sleep(0.05)
        if k.slow_first_byte_s:
            await asyncio.sleep(k.slow_first_byte_s)
        if body.get("stream"):
            return await self._stream(request, body)
        self.stats.finished += 1
        return web.json_response(completion_body(self.name, k.chunks))

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        k = self.knobs
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if k.token_ids and body.get("return_token_ids"):
            chunks = token_stream_chunks(self.name, body.get("prompt"), k.chunks, _wants_usage(body),
                                         reasoning=k.reasoning_tokens if "messages" in body else 0,
                                         text=k.token_text)
        else:
            chunks = stream_chunks(self.name, k.chunks, _wants_usage(body), k.pad)
        if k.comment_first:
            await resp.write(b": ping\n\n")
        for i, chunk in enumerate(chunks):
            if k.die_after_chunks is not None and i >= k.die_after_chunks:
                assert request.transport is not None
                request.transport.abort()
                return resp
            while k.stall_after_chunks is not None and i >= k.stall_after_chunks:
                await asyncio.sleep(0.05)
            if k.fail_after_chunks is not None and i + k.fail_coalesced >= k.fail_after_chunks:
                failure = failure_events(k.fail_code, k.fail_old_shape)
                if k.fail_unterminated:
                    failure = failure[:-len(b"data: [DONE]\n\n") - 2]
                await resp.write((chunk if k.fail_coalesced else b"") + failure)
                if k.fail_once:
                    k.fail_after_chunks = None
                break
            await resp.write(chunk.replace(b"\n\n", b"\r\n\r\n") if k.crlf else chunk)
            if k.chunk_delay_s:
                await asyncio.sleep(k.chunk_delay_s)
        await resp.write_eof()
        self.stats.finished += 1
        return resp


def failure_events(code: str, old_shape: bool = False) -> bytes:
    """What a dpserve replica sends when a request fails mid-stream (serving/handlers.py); or
    `old_shape`: an older vLLM's error event alone."""
    status = 503 if code == "engine_down" else 422
    if old_shape:
        error = {"object": "error", "message": "failed", "type": "x", "param": None, "code": code}
        return b"data: " + orjson.dumps(error) + b"\n\ndata: [DONE]\n\n"
    abort = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
             "choices": [{"index": 0, "delta": {}, "finish_reason": "abort"}]}
    return (b"data: " + orjson.dumps(abort) + b"\n\ndata: " + orjson.dumps(error_body(status, "failed", code))
            + b"\n\ndata: [DONE]\n\n")


def _wants_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


def completion_body(name: str, n_tokens: int) -> dict[str, Any]:
    return {"id": "cmpl-1", "object": "chat.completion", "created": int(time.time()), "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"hello from {name}"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": n_tokens, "total_tokens": 7 + n_tokens}}


def stream_chunks(name: str, n: int, usage: bool, pad: int = 0) -> list[bytes]:
    """The exact SSE bytes a fake worker streams (tests compare the relay against these)."""
    def event(payload: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(payload) + b"\n\n"
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "fake-model"}
    out = [event({**base, "choices": [{"index": 0, "delta": {"content": f"{name}-{i} " + "x" * pad},
                                       "finish_reason": None}]}) for i in range(n)]
    out.append(event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if usage:
        out.append(event({**base, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": n,
                                                           "total_tokens": 7 + n}}))
    out.append(b"data: [DONE]\n\n")
    return out


PROMPT_IDS = [1, 2, 3]
FIRST_ANSWER_ID = 1000


def token_stream_chunks(name: str, prompt: Any, n: int, usage: bool, reasoning: int = 0,
                        text: str | None = None) -> list[bytes]:
    """A fake model with token ids: answer token i is `f"{name}-{i} "` (or `text`) with id 1000 + i,
    the first `reasoning` of them sent as `reasoning_content`; the prompt is [1, 2, 3]; a token-id
    prompt (a resumed answer) continues after the answer ids it holds."""
    def event(payload: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(payload) + b"\n\n"
    token_prompt = isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)
    prompt_ids = prompt if token_prompt else PROMPT_IDS
    start = sum(1 for t in prompt_ids if t >= FIRST_ANSWER_ID)
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "fake-model"}
    out = [event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                       "finish_reason": None}], "prompt_token_ids": prompt_ids})]
    out += [event({**base, "choices": [{"index": 0, "delta": {
        "reasoning_content" if i < reasoning else "content": f"{name}-{i} " if text is None else text},
        "finish_reason": None, "token_ids": [FIRST_ANSWER_ID + i]}]}) for i in range(start, n)]
    out.append(event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                           "token_ids": []}]}))
    if usage:
        out.append(event({**base, "choices": [], "usage": {"prompt_tokens": len(prompt_ids),
                                                           "completion_tokens": n - start,
                                                           "total_tokens": len(prompt_ids) + n - start}}))
    out.append(b"data: [DONE]\n\n")
    return out


async def _serve_forever(**knobs: Any) -> None:
    worker = FakeWorker(**knobs)
    await worker.start()
    print(worker.port, flush=True)  # the parent reads where it listens
    await asyncio.Event().wait()


if __name__ == "__main__":  # `python -m tests.integration.gateway.fake_worker`: one in its own process
    asyncio.run(_serve_forever())
