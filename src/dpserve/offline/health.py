"""Bringing replicas back: probe /health of the ones marked down and mark them up again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from dpserve.aio import cancel_and_wait
from dpserve.offline.replicas import Replica, ReplicaPool

logger = logging.getLogger(__name__)

Probe = Callable[[str], Awaitable[bool]]


class HealthProber:
    """Every `interval_s`, probes each down replica (past its cool-down); `on_change` runs after one
    comes back."""

    def __init__(self, pool: ReplicaPool, probe: Probe, interval_s: float,
                 on_change: Callable[[], None]) -> None:
        self._pool = pool
        self._probe = probe
        self._interval_s = interval_s
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def check_all_once(self) -> None:
        """Probe every replica now and set its state quietly (the job's starting point)."""
        results = await asyncio.gather(*(self._probe(r.url) for r in self._pool.replicas))
        for replica, ok in zip(self._pool.replicas, results, strict=True):
            if ok:
                self._pool.mark_up(replica)
            else:
                logger.warning("replica %s (%s) not healthy yet; used once it is", replica.id, replica.url)
                self._pool.mark_down(replica)

    async def probe_down_once(self) -> None:
        down = self._pool.due_for_probe()
        results = await asyncio.gather(*(self._probe(r.url) for r in down))
        for replica, ok in zip(down, results, strict=True):
            if ok:
                self._revive(replica)

    def _revive(self, replica: Replica) -> None:
        logger.info("replica %s (%s) is healthy again", replica.id, replica.url)
        self._pool.mark_up(replica)
        self._on_change()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.probe_down_once()
