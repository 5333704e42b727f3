"""Failure knobs of `dpserve sim`: a middleware counting completion requests, and an engine wrapper
that kills the process mid-stream. Only POSTs to the completion endpoints count."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from dpserve.errors import HTTPError
from dpserve.http_names import PROXIED_PATHS
from dpserve.serving.engine_client import EngineClient, EngineStats, GenerateRequest, TokenDelta
from dpserve.sim.config import FaultConfig

logger = logging.getLogger(__name__)

COMPLETION_PATHS = frozenset(PROXIED_PATHS)
# Deltas sent before the process dies, so the client sees a stream cut in the middle.
DELTAS_BEFORE_DEATH = 2
_DIE_MID_STREAM: contextvars.ContextVar[bool] = contextvars.ContextVar("die_mid_stream", default=False)


def _kill_self(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)


class FaultInjector:
    """Decides per completion request (numbered from 1) which failure, if any, it gets."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self.num_requests = 0
        self.has_refused = False  # --refuse-after fired: the process should exit non-zero

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method != "POST" or request.path not in COMPLETION_PATHS:
            return await handler(request)
        self.num_requests += 1
        n = self.num_requests
        cfg = self.config
        if n <= cfg.fail_first:
            raise HTTPError(503, f"injected failure: --fail-first {cfg.fail_first} (request {n})")
        if cfg.fail_after is not None and n > cfg.fail_after:
            raise HTTPError(500, f"injected failure: --fail-after {cfg.fail_after} (request {n})")
        if cfg.hang_after is not None and n > cfg.hang_after:
            logger.warning("request %d: hanging (--hang-after %d)", n, cfg.hang_after)
            await asyncio.Future()  # never completes; cancelled at shutdown
        if cfg.slow_first_byte_s > 0:
            await asyncio.sleep(cfg.slow_first_byte_s)
        if cfg.die_mid_stream_after is not None and n > cfg.die_mid_stream_after:
            _DIE_MID_STREAM.set(True)
        response = await handler(request)
        if cfg.refuse_after is not None and n >= cfg.refuse_after:
            logger.warning("request %d answered: shutting down (--refuse-after %d)", n, cfg.refuse_after)
            self.has_refused = True
            asyncio.get_running_loop().call_soon(_kill_self, signal.SIGTERM)
        return response


class DyingEngine:
    """Delegates to an EngineClient; a request marked by the middleware kills the process (SIGKILL)
    after DELTAS_BEFORE_DEATH deltas, as a crashed replica would."""

    def __init__(self, inner: EngineClient) -> None:
        self._inner = inner
        self.tokenizer = inner.tokenizer
        self.max_model_len = inner.max_model_len

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self) -> None:
        await self._inner.stop()

    def stats(self) -> EngineStats:
        return self._inner.stats()

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[TokenDelta, None]:
        doomed = _DIE_MID_STREAM.get()
        sent = 0
        inner = self._inner.generate(request)
        try:
            async for delta in inner:
                if doomed and sent >= DELTAS_BEFORE_DEATH:
                    logger.warning("dying mid-stream on %s (--die-mid-stream-after)", request.request_id)
                    await asyncio.sleep(0.05)  # let the chunks already written reach the client
                    _kill_self(signal.SIGKILL)
                yield delta
                sent += 1
        finally:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()  # closing the inner generator aborts the request in the engine
