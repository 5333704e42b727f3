"""Drive conversations against the server: closed loop (bounded in-flight) or open loop (arrival
times), one task per conversation, turns in order with the real replies fed back as history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from dpserve.bench.client import send_request
from dpserve.bench.conversation import Conversation, RequestResult
from dpserve.bench.payload import RequestOptions, request_body, request_headers


class Runner:
    """Sends every turn of every conversation; results accumulate in `results` as they finish,
    so an interrupted run still reports what it measured."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, opts: RequestOptions, *,
                 max_in_flight: int | None, timeout_s: float, think_time_s: float = 0.0,
                 on_result: Callable[[RequestResult], None] | None = None) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + opts.path
        self._opts = opts
        self._slots = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        self._timeout_s = timeout_s
        self._think_time_s = think_time_s
        self._on_result = on_result
        self._origin = time.perf_counter()
        self.results: list[RequestResult] = []

    async def run(self, conversations: Sequence[Conversation], arrivals_s: Sequence[float],
                  stop: asyncio.Event | None = None) -> bool:
        """Run all conversations, conversation i starting no earlier than `arrivals_s[i]`.

        Returns False when `stop` was set first (in-flight requests are then cancelled)."""
        self._origin = time.perf_counter()
        tasks = [asyncio.create_task(self._conversation(c, t))
                 for c, t in zip(conversations, arrivals_s, strict=True)]
        everything: asyncio.Future[Any] = asyncio.gather(*tasks)
        stopper: asyncio.Future[Any] = asyncio.ensure_future((stop or asyncio.Event()).wait())
        try:
            await asyncio.wait({everything, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            finished = everything.done()
            if not finished:
                everything.cancel()
            await asyncio.gather(everything, return_exceptions=True)
        return finished

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self._origin

    async def _conversation(self, conv: Conversation, arrival_s: float) -> None:
        delay = arrival_s - self.elapsed_s
        if delay > 0:
            await asyncio.sleep(delay)
        replies: list[str] = []
        for index in range(len(conv.turns)):
            if index and self._think_time_s:
                await asyncio.sleep(self._think_time_s)
            result = await self._send(conv, index, replies)
            if not result.ok:
                return  # later turns would need this reply as history
            replies.append(result.generated_text)

    async def _send(self, conv: Conversation, index: int, replies: list[str]) -> RequestResult:
        body = request_body(self._opts, conv, index, replies)
        headers = request_headers(self._opts, conv)
        if self._slots is None:
            result = await self._post(body, headers)
        else:
            async with self._slots:
                result = await self._post(body, headers)
        self.results.append(result)
        if self._on_result is not None:
            self._on_result(result)
        return result

    async def _post(self, body: dict[str, object], headers: dict[str, str]) -> RequestResult:
        return await send_request(self._http, self._url, body, headers, timeout_s=self._timeout_s,
                                  origin_s=self._origin)
