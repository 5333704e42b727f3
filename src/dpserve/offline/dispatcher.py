"""Keeping every replica busy: `max_inflight` pull loops per replica, retries, results to OUT.

Each slot asks the assigner for work when its previous request finishes, so fast replicas take
more and the job ends when the last request does, not when the slowest shard does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dpserve.aio import BackgroundTasks
from dpserve.offline.assignment import Assigner, WorkItem
from dpserve.offline.client import Outcome
from dpserve.offline.progress import ProgressState
from dpserve.offline.records import BatchRequest, failure_line, output_tokens, success_line
from dpserve.offline.replicas import Replica, ReplicaPool
from dpserve.offline.writer import ResultSink

logger = logging.getLogger(__name__)

Sender = Callable[[str, BatchRequest], Awaitable[Outcome]]
Loader = Callable[[WorkItem], BatchRequest]


class NoReplicaError(RuntimeError):
    """No replica was healthy for longer than the configured limit; the job stops, resumable."""


@dataclass(frozen=True)
class DispatchSettings:
    max_inflight_per_replica: int
    max_retries: int
    no_replica_timeout_s: float
    watchdog_interval_s: float = 0.5


class Dispatcher:
    """Runs every queued item to a written result (success or final failure)."""

    def __init__(self, pool: ReplicaPool, assigner: Assigner, sink: ResultSink, loader: Loader,
                 send: Sender, progress: ProgressState, settings: DispatchSettings) -> None:
        self._pool = pool
        self._assigner = assigner
        self._sink = sink
        self._load = loader
        self._send = send
        self._progress = progress
        self._settings = settings
        self._changed = asyncio.Condition()
        self._in_flight = 0
        self._notifiers = BackgroundTasks()

    def notify(self) -> None:
        """Something changed (replica up, window moved): idle slots look for work again."""
        self._notifiers.spawn(self._notify_all())

    async def _notify_all(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @property
    def is_finished(self) -> bool:
        return self._assigner.num_queued == 0 and self._in_flight == 0

    async def run(self) -> None:
        """Return when every item has a result; raise NoReplicaError if all replicas stay down."""
        tasks = [asyncio.create_task(self._all_slots()), asyncio.create_task(self._watchdog())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _all_slots(self) -> None:
        slots = [asyncio.create_task(self._slot(r)) for r in self._pool.replicas
                 for _ in range(self._settings.max_inflight_per_replica)]
        try:
            await asyncio.gather(*slots)
        finally:
            for slot in slots:
                slot.cancel()
            await asyncio.gather(*slots, return_exceptions=True)

    async def _watchdog(self) -> None:
        while not self.is_finished:
            if self._pool.all_down_for_s() > self._settings.no_replica_timeout_s:
                raise NoReplicaError(
                    f"no replica healthy for {self._settings.no_replica_timeout_s:.0f}s; "
                    f"{self._assigner.num_queued + self._in_flight} requests left (use --resume)")
            await asyncio.sleep(self._settings.watchdog_interval_s)

    async def _next(self, replica: Replica) -> WorkItem | None:
        async with self._changed:
            while not self.is_finished:
                if replica.is_healthy:
                    item = self._assigner.next_for(replica.id, self._pool.healthy_ids(), self._sink.admits)
                    if item is not None:
                        self._in_flight += 1
                        return item
                await self._changed.wait()
            self._changed.notify_all()  # wake the other slots so they see the end too
            return None

    async def _slot(self, replica: Replica) -> None:
        while (item := await self._next(replica)) is not None:
            request = self._load(item)
            replica.in_flight += 1
            try:
                outcome = await self._send(replica.url, request)
            finally:
                replica.in_flight -= 1
            async with self._changed:
                self._in_flight -= 1
                self._settle(replica, item, request, outcome)
                self._assigner.on_settled(item)
                self._changed.notify_all()

    def _settle(self, replica: Replica, item: WorkItem, request: BatchRequest, outcome: Outcome) -> None:
        if outcome.is_success:
            tokens = output_tokens(outcome.body)
            replica.completed += 1
            self._pool.record_success(replica)
            replica.output_tokens += tokens
            self._progress.output_tokens += tokens
            self._finish(item, success_line(request.custom_id, outcome.status_code or 200,
                                            outcome.body, outcome.request_id or request.custom_id))
            return
        error = outcome.error or "failed"
        if outcome.is_retryable:
            self._record_failure(replica, outcome)
        if outcome.is_retryable and item.attempts < self._settings.max_retries:
            self._progress.retried += 1
            self._assigner.requeue(item.failed_on(replica.id, error))
            return
        logger.warning("custom_id %r failed for good after %d attempts: %s",
                       request.custom_id, item.attempts + 1, error)
        self._progress.failed += 1
        self._finish(item, failure_line(request.custom_id, error, outcome.status_code, outcome.body,
                                        outcome.request_id))

    def _record_failure(self, replica: Replica, outcome: Outcome) -> None:
        was_healthy = replica.is_healthy
        self._pool.record_failure(replica, unreachable=outcome.replica_unreachable)
        if was_healthy and not replica.is_healthy:
            why = "unreachable" if outcome.replica_unreachable else "failing every request"
            logger.warning("replica %s (%s) %s; routing around it", replica.id, replica.url, why)

    def _finish(self, item: WorkItem, line: dict[str, object]) -> None:
        self._progress.done += 1
        self._sink.submit(item.ref.line_no, line)
