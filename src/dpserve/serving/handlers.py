"""HTTP handlers of the replica: chat/completions (SSE or JSON), models, health, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from aiohttp import web

from dpserve.errors import HTTPError, error_body
from dpserve.json_body import JsonTurns, load_json
from dpserve.serving.body import read_body
from dpserve.serving.disconnect import DisconnectWatcher
from dpserve.serving.engine_client import EngineClient
from dpserve.serving.generation import Generation, request_failed
from dpserve.serving.limits import RequestLimits
from dpserve.serving.metrics import ReplicaMetrics
from dpserve.serving.prepare import Kind, PreparedRequest, prepare
from dpserve.serving.responses import delta_chunk, full_response, role_chunk, usage_chunk
from dpserve.serving.sampling_defaults import SamplingDefaults

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no"}
_DONE = b"data: [DONE]\n\n"
# Threads that validate and tokenise requests (see _complete): two, so one long prompt being
# tokenised does not hold up every other request's start.
PREPARE_THREADS = 2


class ReplicaHandlers:
    """The endpoints of one replica over one EngineClient."""

    def __init__(self, client: EngineClient, served_model_name: str, metrics: ReplicaMetrics, *,
                 limits: RequestLimits, sampling_defaults: SamplingDefaults) -> None:
        self.client = client
        self.served_model_name = served_model_name
        self.metrics = metrics
        self.limits = limits
        self.sampling_defaults = sampling_defaults
        self.disconnects = DisconnectWatcher()
        self._json_turns = JsonTurns()
        self._prepare_pool = ThreadPoolExecutor(max_workers=PREPARE_THREADS, thread_name_prefix="prepare")
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
        raw = await read_body(request, self.limits.max_request_bytes)
        body = await self._json_turns.run(len(raw), load_json, raw)
        prepared = await self._prepare(kind, body)
        generation = Generation(self.client, self.metrics, prepared, lambda: _is_disconnected(request))
        with self.disconnects.watch(request):
            if prepared.stream:
                return await _stream(request, prepared, generation)
            return await _collect(prepared, generation)

    async def _prepare(self, kind: Kind, body: Any) -> PreparedRequest:
        """Validate and tokenise on a worker thread: a chat template or a long prompt takes
        milliseconds to seconds, which on the event loop would stall /health and every stream (the
        tokenizer releases the GIL while it works, so the loop runs meanwhile)."""
        work = functools.partial(prepare, kind, body, self.client, self.served_model_name,
                                 limits=self.limits, defaults=self.sampling_defaults)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._prepare_pool, work)
        except HTTPError:
            raise
        except Exception as exc:  # a body our validation let through but could not handle
            raise request_failed("(being prepared)", exc) from exc


def _is_disconnected(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _collect(prepared: PreparedRequest, generation: Generation) -> web.Response:
    """The whole answer as one JSON body; a failed request answers its HTTPError's JSON instead."""
    parts: list[str] = []
    token_ids: list[int] = []
    async with contextlib.aclosing(generation.deltas()) as deltas:
        async for delta in deltas:
            parts.append(delta.text)
            token_ids += delta.token_ids
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
    except HTTPError as exc:  # the request failed after the 200 went out: say so, then end the stream
        await _send_failure(response, prepared, exc)
    except Exception as exc:
        await _send_failure(response, prepared, request_failed(prepared.request_id, exc))
    return response


async def _send(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
    await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")


async def _send_failure(response: web.StreamResponse, prepared: PreparedRequest, exc: HTTPError) -> None:
    """A last chunk with finish_reason "abort", the error as an event (what OpenAI clients raise
    on), then [DONE]: the stream ends cleanly and says why."""
    with contextlib.suppress(ConnectionError):
        await _send(response, delta_chunk(prepared, "", "abort"))
        await _send(response, error_body(exc.status, exc.message, exc.code))
        await response.write(_DONE)
