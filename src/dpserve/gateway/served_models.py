"""Which models each replica serves: fetched from its /v1/models when it comes up.

Routing uses it to send a request only to replicas that serve the requested `model`, the
gateway answers 404 itself for a model no healthy replica serves, and its `/v1/models` is the
union of these cards (no fetch per call, except for a worker whose fetch failed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from dpserve.aio import BackgroundTasks
from dpserve.gateway.aliases import ModelAliases
from dpserve.gateway.replica_identity import identity, info_labels, refusal
from dpserve.gateway.worker import Worker
from dpserve.http_body import BodyTooLarge, read_capped, read_text
from dpserve.log import ThrottledLog

logger = logging.getLogger(__name__)


async def fetch_model_cards(http: aiohttp.ClientSession, url: str, timeout_s: float,
                            unusable: ThrottledLog) -> list[dict[str, Any]] | None:
    """The `data` list of `url`/v1/models, or None when the replica did not answer it usably.

    The body is the replica's: read capped (http_body), and parsed as bytes, so one that is not
    UTF-8 (JSON's only encoding) fails like one that is not JSON, rather than naming a model with
    replacement characters."""
    try:
        async with http.get(url + "/v1/models", timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                return None
            body = orjson.loads(await read_capped(resp))
    except (aiohttp.ClientError, TimeoutError):
        return None
    except (BodyTooLarge, orjson.JSONDecodeError) as exc:  # it answered, but not with a model list
        unusable.warning(url + "/v1/models", "%s/v1/models is unusable (%s): its models stay unknown",
                          url, exc)
        return None
    data = body.get("data") if isinstance(body, dict) else None
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else None


async def fetch_info_labels(http: aiohttp.ClientSession, url: str, timeout_s: float,
                            unusable: ThrottledLog) -> dict[str, str]:
    """The compared labels of the replica's info gauges (replica_identity.py); {} if none.

    Read capped and decoded with replacement, as the load poller reads the same body: a stray
    byte elsewhere in /metrics made this {} before, and so the replica's facts went uncompared."""
    try:
        async with http.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            return info_labels(await read_text(resp)) if resp.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError):
        return {}
    except BodyTooLarge as exc:
        unusable.warning(url + "/metrics", "%s/metrics is unusable (%s): its info labels are not compared",
                          url, exc)
        return {}


class ModelDiscovery:
    """Keeps `worker.models` current: refreshed when a worker is added or comes back up.

    With `peers` it also checks the replica serves each model name like the accepted workers
    serving it (replica_identity.py) and sets `worker.refused` (out of rotation) when not.
    """

    def __init__(self, http: aiohttp.ClientSession, timeout_s: float,
                 peers: Callable[[], list[Worker]] | None = None) -> None:
        self._http = http
        self._timeout_s = timeout_s
        self._peers = peers
        self._background = BackgroundTasks()
        # A replica whose answers are unusable is asked again on every client GET /v1/models: one
        # fetch at a time per replica (64 concurrent calls held 64 bodies of up to 8 MiB each), and
        # one warning a minute per replica and path, not one per call.
        self._fetching: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._again: set[tuple[str, str]] = set()  # asked anew while their fetch ran
        self._unusable = ThrottledLog(logger)

    async def refresh(self, worker: Worker, *, anew: bool = False) -> None:
        """Read the worker's models (and facts); joins the fetch already under way for it, if any —
        and with `anew` (it came back up: a fetch begun before may have read the old process) one
        more fetch follows that one."""
        key = (worker.id, worker.url)
        fetch = self._fetching.get(key)
        if fetch is None or fetch.done():
            fetch = self._fetching[key] = asyncio.ensure_future(self._fetch_until_current(worker, key))
            fetch.add_done_callback(lambda done: self._fetching.pop(key, None)
                                    if self._fetching.get(key) is done else None)
        elif anew:
            self._again.add(key)
        await asyncio.shield(fetch)  # a caller cancelled (a client gone) leaves it to the others

    async def _fetch_until_current(self, worker: Worker, key: tuple[str, str]) -> None:
        while True:
            self._again.discard(key)
            await self._refresh(worker)
            if key not in self._again:
                return

    async def _refresh(self, worker: Worker) -> None:
        cards = await fetch_model_cards(self._http, worker.url, self._timeout_s, self._unusable)
        if cards is None:  # unknown stays None: such a worker is not filtered out
            return
        worker.models = frozenset(str(c.get("id")) for c in cards)
        worker.model_cards = tuple(cards)
        if self._peers is not None:
            labels = await fetch_info_labels(self._http, worker.url, self._timeout_s, self._unusable)
            worker.identity = identity(cards, labels)
            self._check(worker, self._peers())

    def _check(self, worker: Worker, peers: list[Worker]) -> None:
        assert worker.identity is not None
        accepted = [(w.id, w.identity) for w in peers
                    if w is not worker and w.identity is not None and w.refused is None]
        reason = refusal(worker.identity, accepted)
        if reason != worker.refused:
            if reason is not None:
                logger.error("worker %s (%s) REFUSED: it %s (--allow-heterogeneous to serve such a mix)",
                             worker.id, worker.url, reason)
            else:
                logger.info("worker %s (%s) matches its peers now: back in rotation", worker.id, worker.url)
        worker.refused = reason

    async def refresh_unknown(self, workers: list[Worker]) -> None:
        """Fetch again for the workers whose cards are not known (their fetch failed before)."""
        await asyncio.gather(*(self.refresh(w) for w in workers if w.models is None))

    def refresh_soon(self, worker: Worker) -> None:
        """From sync callbacks (health transitions): refresh in the background."""
        self._background.spawn(self.refresh(worker, anew=True))

    async def stop(self) -> None:
        await self._background.cancel_all()
        for fetch in list(self._fetching.values()):
            fetch.cancel()
        await asyncio.gather(*self._fetching.values(), return_exceptions=True)


def model_list(workers: list[Worker], aliases: ModelAliases) -> list[dict[str, Any]]:
    """`/v1/models` data: each served model once (first worker's card wins), then the aliases."""
    served: dict[str, dict[str, Any]] = {}
    for w in workers:
        for card in w.model_cards:
            served.setdefault(str(card.get("id")), card)
    return [*served.values(), *aliases.cards(served)]
