"""HTTP handlers of the replica: chat/completions (SSE or JSON), models, health, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from aiohttp import web

from dpserve.errors import HTTPError, error_body
from dpserve.serving.disconnect import DisconnectWatcher
from dpserve.serving.engine_client import EngineClient
from dpserve.serving.generation import Generation
from dpserve.serving.metrics import ReplicaMetrics
from dpserve.serving.prepare import Kind, PreparedRequest, prepare
from dpserve.serving.responses import delta_chunk, full_response, role_chunk, usage_chunk

logger = logging.getLogger(__name__)

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no"}
_DONE = b"data: [DONE]\n\n"
# Bodies above this are parsed into token ids off the event loop (see _complete).
INLINE_PREPARE_MAX_BYTES = 64 * 1024


class ReplicaHandlers:
    """The endpoints of one replica over one EngineClient."""

    def __init__(self, client: EngineClient, served_model_name: str, metrics: ReplicaMetrics) -> None:
        self.client = client
        self.served_model_name = served_model_name
        self.metrics = metrics
        self.disconnects = DisconnectWatcher()
        self._prepare_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
        self.created = int(time.time())
        self.is_ready = False

    def close(self) -> None:
        self._prepare_pool.shutdown(wait=False, cancel_futures=True)

    async def health(self, request: web.Request) -> web.Response:
        if not self.is_ready:
            raise HTTPError(503, "the engine is starting")
        return web.Response(text="")

    async def models(self, request: web.Request) -> web.Response:
        card = {"id": self.served_model_name, "object": "model", "created": self.created,
                "owned_by": "dpserve", "root": self.served_model_name, "parent": None,
                "max_model_len": self.client.max_model_len}
        return _json({"object": "list", "data": [card]})

    async def metrics_text(self, request: web.Request) -> web.Response:
        text = self.metrics.render(self.client.stats())
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "completion")

    async def _complete(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        if not self.is_ready:
            raise HTTPError(503, "the engine is starting")
        raw = await request.read()
        body = _parse_json(raw)
        if len(raw) > INLINE_PREPARE_MAX_BYTES:
            # Tokenising a multi-megabyte prompt takes seconds: doing it on the event loop would
            # stall /health and every stream of this replica, so large bodies go to one worker
            # thread (one, so the tokenizer is never used by two threads at once for big jobs).
            prepared = await asyncio.get_running_loop().run_in_executor(
                self._prepare_pool, prepare, kind, body, self.client, self.served_model_name)
        else:
            prepared = prepare(kind, body, self.client, self.served_model_name)
        generation = Generation(self.client, self.metrics, prepared, lambda: _is_disconnected(request))
        with self.disconnects.watch(request):
            if prepared.stream:
                return await _stream(request, prepared, generation)
            return await _collect(prepared, generation)


def _parse_json(raw: bytes) -> Any:
    if not raw:
        raise HTTPError(400, "request body is empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"request body is not valid JSON: {exc}") from exc


def _is_disconnected(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _collect(prepared: PreparedRequest, generation: Generation) -> web.Response:
    parts: list[str] = []
    token_ids: list[int] = []
    try:
        async with contextlib.aclosing(generation.deltas()) as deltas:
            async for delta in deltas:
                parts.append(delta.text)
                token_ids += delta.token_ids
    except Exception as exc:
        logger.exception("engine failed on %s", prepared.request_id)
        raise HTTPError(500, f"engine error: {exc}") from exc
    body = full_response(prepared, "".join(parts), generation.finish_reason or "abort", generation.usage,
                         generation.stop_reason, token_ids)
    return _json(body)


async def _stream(request: web.Request, prepared: PreparedRequest,
                  generation: Generation) -> web.StreamResponse:
    response = web.StreamResponse(headers=_SSE_HEADERS)
    await response.prepare(request)
    try:
        if prepared.kind == "chat":
            await _send(response, role_chunk(prepared))
        first = True
        async with contextlib.aclosing(generation.deltas()) as deltas:
            async for delta in deltas:
                stop_reason = generation.stop_reason if delta.finish_reason else None
                await _send(response, delta_chunk(prepared, delta.text, delta.finish_reason, stop_reason,
                                                  delta.token_ids, first))
                first = False
        if prepared.include_usage:
            await _send(response, usage_chunk(prepared, generation.usage))
        await response.write(_DONE)
    except ConnectionError:
        return response  # client went away; the generation was closed, aborting the request
    except Exception as exc:
        logger.exception("engine failed mid-stream on %s", prepared.request_id)
        await _send_error(response, f"engine error: {exc}")
    return response


async def _send(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
    await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")


async def _send_error(response: web.StreamResponse, message: str) -> None:
    with contextlib.suppress(ConnectionError):
        await _send(response, error_body(500, message))
        await response.write(_DONE)
