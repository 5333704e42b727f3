"""A tiny in-process OpenAI replica for batch tests: echoes custom work, with failure knobs."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dpserve.errors import error_response


@dataclass
class FakeReplica:
    """Counts requests per x-request-id; `fail_status` answers every request with that status."""

    delay_s: float = 0.0
    jitter_steps: int = 1  # delay is delay_s × (a per-request number in [1, jitter_steps])
    fail_status: int | None = None
    seen: Counter[str] = field(default_factory=Counter)
    order: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_post("/v1/completions", self._complete)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _complete(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        request_id = request.headers.get("x-request-id", "")
        self.seen[request_id] += 1
        self.order.append(request_id)
        step = 1 + zlib.crc32(request_id.encode()) % self.jitter_steps
        await asyncio.sleep(self.delay_s * step)
        if self.fail_status is not None:
            return error_response(self.fail_status, "injected failure")
        max_tokens = int(body.get("max_tokens", 4))
        text = "x" * max_tokens
        return web.json_response({"id": "cmpl-1", "object": "chat.completion", "model": body.get("model"),
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                               "finish_reason": "length"}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": max_tokens,
                                            "total_tokens": 3 + max_tokens}})


async def start_fake(replica: FakeReplica) -> tuple[web.AppRunner, str]:
    """Serve `replica` on a free 127.0.0.1 port; returns the runner (cleanup!) and base URL."""
    runner = web.AppRunner(replica.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def running_fakes(*replicas: FakeReplica) -> AsyncIterator[list[str]]:
    """Serve every replica (as start_fake) for the block; yields their base URLs, cleans up after."""
    started: list[web.AppRunner] = []
    try:
        urls = []
        for replica in replicas:
            runner, url = await start_fake(replica)
            started.append(runner)
            urls.append(url)
        yield urls
    finally:
        for runner in started:
            await runner.cleanup()
