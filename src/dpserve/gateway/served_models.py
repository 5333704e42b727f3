"""Which models each replica serves: fetched from its /v1/models when it comes up.

Routing uses it to send a request only to replicas that serve the requested `model`, the
gateway answers 404 itself for a model no healthy replica serves, and its `/v1/models` is the
union of these cards (no fetch per call, except for a worker whose fetch failed).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from dpserve.aio import BackgroundTasks
from dpserve.gateway.aliases import ModelAliases
from dpserve.gateway.worker import Worker


async def fetch_model_cards(http: aiohttp.ClientSession, url: str,
                            timeout_s: float) -> list[dict[str, Any]] | None:
    """The `data` list of `url`/v1/models, or None when the replica did not answer it."""
    try:
        async with http.get(url + "/v1/models", timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            body = orjson.loads(await resp.read()) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
        return None
    data = body.get("data") if isinstance(body, dict) else None
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else None


class ModelDiscovery:
    """Keeps `worker.models` current: refreshed when a worker is added or comes back up."""

    def __init__(self, http: aiohttp.ClientSession, timeout_s: float) -> None:
        self._http = http
        self._timeout_s = timeout_s
        self._background = BackgroundTasks()

    async def refresh(self, worker: Worker) -> None:
        cards = await fetch_model_cards(self._http, worker.url, self._timeout_s)
        if cards is not None:  # unknown stays None: such a worker is not filtered out
            worker.models = frozenset(str(c.get("id")) for c in cards)
            worker.model_cards = tuple(cards)

    async def refresh_unknown(self, workers: list[Worker]) -> None:
        """Fetch again for the workers whose cards are not known (their fetch failed before)."""
        await asyncio.gather(*(self.refresh(w) for w in workers if w.models is None))

    def refresh_soon(self, worker: Worker) -> None:
        """From sync callbacks (health transitions): refresh in the background."""
        self._background.spawn(self.refresh(worker))

    async def stop(self) -> None:
        await self._background.cancel_all()


def model_list(workers: list[Worker], aliases: ModelAliases) -> list[dict[str, Any]]:
    """`/v1/models` data: each served model once (first worker's card wins), then the aliases."""
    served: dict[str, dict[str, Any]] = {}
    for w in workers:
        for card in w.model_cards:
            served.setdefault(str(card.get("id")), card)
    return [*served.values(), *aliases.cards(served)]
