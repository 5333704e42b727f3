"""Send one OpenAI request and measure it: TTFT and inter-token gaps per SSE chunk, token counts
from the final `usage` (stream_options.include_usage), else one token per content chunk."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson

from dpserve.bench.conversation import RequestResult
from dpserve.bench.sse import DONE, SSEParser
from dpserve.http_names import WORKER_HEADER

ERROR_PREVIEW_CHARS = 300


def chunk_text(obj: dict[str, Any]) -> str:
    """The generated text in one chat or completions chunk (or full non-streamed response)."""
    choices = obj.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    for key in ("delta", "message"):
        part = choice.get(key)
        if isinstance(part, dict):
            return str(part.get("content") or "")
    return str(choice.get("text") or "")


class _StreamState:
    """Running measurements of one streamed response."""

    def __init__(self, result: RequestResult, start: float) -> None:
        self.result = result
        self.start = start
        self.last_token_at: float | None = None
        self.chunks = 0
        self.pieces: list[str] = []
        self.usage: dict[str, Any] | None = None
        self.done = False

    def on_event(self, data: str, now: float) -> None:
        if data == DONE:
            self.done = True
            return
        obj = orjson.loads(data)
        if "error" in obj:
            raise _ServerError(str(obj["error"])[:ERROR_PREVIEW_CHARS])
        if obj.get("usage"):
            self.usage = obj["usage"]
        text = chunk_text(obj)
        if not text:
            return
        if self.last_token_at is None:
            self.result.ttft_s = now - self.start
        else:
            self.result.itl_s.append(now - self.last_token_at)
        self.last_token_at = now
        self.chunks += 1
        self.pieces.append(text)

    def finish(self, now: float) -> None:
        if not self.done:
            raise _ServerError("stream ended without [DONE]")
        self.result.e2e_s = now - self.start
        self.result.generated_text = "".join(self.pieces)
        _apply_usage(self.result, self.usage, fallback_tokens=self.chunks)
        self.result.ok = True


class _ServerError(Exception):
    """The server reported or caused a failure after answering 200."""


def _apply_usage(result: RequestResult, usage: dict[str, Any] | None, fallback_tokens: int) -> None:
    usage = usage or {}
    completion = usage.get("completion_tokens")
    result.output_tokens = int(completion) if completion is not None else fallback_tokens
    prompt = usage.get("prompt_tokens")
    result.prompt_tokens = int(prompt) if prompt is not None else None


async def _read_stream(resp: aiohttp.ClientResponse, result: RequestResult, start: float) -> None:
    state = _StreamState(result, start)
    parser = SSEParser()
    async for chunk in resp.content.iter_any():
        now = time.perf_counter()
        for data in parser.feed(chunk):
            state.on_event(data, now)
    for data in parser.close():
        state.on_event(data, time.perf_counter())
    state.finish(time.perf_counter())


async def _read_json(resp: aiohttp.ClientResponse, result: RequestResult, start: float) -> None:
    obj = orjson.loads(await resp.read())
    now = time.perf_counter()
    result.ttft_s = result.e2e_s = now - start
    result.generated_text = chunk_text(obj)
    _apply_usage(result, obj.get("usage"), fallback_tokens=1 if result.generated_text else 0)
    result.ok = True


async def send_request(http: aiohttp.ClientSession, url: str, body: dict[str, Any],
                       headers: dict[str, str], *, timeout_s: float, origin_s: float) -> RequestResult:
    """POST `body` and measure it; never raises for server or network failures (they become
    `ok=False` with `error` set). Cancellation propagates."""
    start = time.perf_counter()
    result = RequestResult(start_s=start - origin_s)
    try:
        async with http.post(url, data=orjson.dumps(body), timeout=aiohttp.ClientTimeout(total=timeout_s),
                             headers={"Content-Type": "application/json", **headers}) as resp:
            result.worker = resp.headers.get(WORKER_HEADER)
            if resp.status != 200:
                text = await resp.text(errors="replace")
                result.error = f"HTTP {resp.status}: {text[:ERROR_PREVIEW_CHARS]}"
            elif body.get("stream"):
                await _read_stream(resp, result, start)
            else:
                await _read_json(resp, result, start)
    except (aiohttp.ClientError, TimeoutError, _ServerError, orjson.JSONDecodeError) as exc:
        result.ok = False
        result.error = f"{type(exc).__name__}: {exc}"[:ERROR_PREVIEW_CHARS]
    return result
