"""CapacityGate: the gateway queue in front of capped workers — wait, grant in order, or shed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dpserve.gateway.admission.contract import CapacityView
from dpserve.gateway.admission.rate_window import EventRate, retry_after_s
from dpserve.gateway.admission.rejection import too_many
from dpserve.gateway.admission.wait_queue import QueueEntry, WaitQueue


class CapacityGate:
    """Requests pass at once while some worker is below its cap and nobody is queued; otherwise
    they wait (by priority class, then arrival) until `pump()` finds capacity, or are shed.

    Grants go out one at a time: the granted request's task must run (and the gateway count it in
    a worker's in_flight) before `has_capacity()` is asked again, else one free slot would
    release the whole queue. The next grant is scheduled with `call_soon` after the previous one
    is claimed, which runs after the claiming task's synchronous step.
    """

    def __init__(self, capacity: CapacityView, *, queue_size: int, drain: EventRate,
                 clock: Callable[[], float]) -> None:
        self._capacity = capacity
        self._queue_size = queue_size
        self._drain = drain
        self._clock = clock
        self._queue: WaitQueue[asyncio.Future[None]] = WaitQueue()
        self._grant_outstanding = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    def can_pass_now(self) -> bool:
        return not self._queue and not self._grant_outstanding and self._capacity.has_capacity()

    async def enter(self, priority: int, timeout_s: float, timeout_reason: str = "queue_timeout") -> float:
        """Wait for capacity; returns seconds waited. Raises Rejection 429 (queue full, timeout)."""
        if self.can_pass_now() or not self._any_healthy():
            # With no healthy worker at all the gateway answers 503 itself; queueing would only delay it.
            return 0.0
        if len(self._queue) >= self._queue_size:
            raise too_many("queue_full", f"gateway queue is full ({self._queue_size} waiting)",
                           self._retry_after(len(self._queue), timeout_s))
        return await self._wait(priority, timeout_s, timeout_reason)

    async def _wait(self, priority: int, timeout_s: float, timeout_reason: str) -> float:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = self._queue.push(fut, priority)
        started = self._clock()
        timer = loop.call_later(timeout_s, self._expire, entry, timeout_s, timeout_reason)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, then the client went away
                self._claimed()
            self._queue.remove(entry)
            raise
        finally:
            timer.cancel()
        self._claimed()
        return self._clock() - started

    def _expire(self, entry: QueueEntry[asyncio.Future[None]], timeout_s: float, reason: str) -> None:
        ahead = self._queue.ahead_of(entry)
        if not self._queue.remove(entry) or entry.item.done():
            return
        what = ("the time-to-first-token SLO" if reason == "slo_queue_timeout"
                else f"--queue-timeout-s={timeout_s:g}")
        entry.item.set_exception(too_many(
            reason, f"request could not start within {what} (no worker below its in-flight cap)",
            self._retry_after(ahead + 1, timeout_s)))

    def _claimed(self) -> None:
        self._grant_outstanding = False
        asyncio.get_running_loop().call_soon(self.pump)

    def pump(self) -> None:
        """Grant the head of the queue if a worker has room (called when capacity may have grown)."""
        if self._grant_outstanding or not self._queue or not self._capacity.has_capacity():
            return
        fut = self._queue.pop()
        if fut is not None and not fut.done():
            fut.set_result(None)
            self._grant_outstanding = True

    def _any_healthy(self) -> bool:
        return any(w.healthy for w in self._capacity.load_snapshot())

    def _retry_after(self, backlog: int, timeout_s: float) -> int:
        return retry_after_s(backlog, self._drain.per_second(), fallback_s=timeout_s)

