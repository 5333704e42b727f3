"""KvEventFeed: the gateway's subscriptions to its workers' KV events, started and stopped with it.

The gateway tells it which workers publish where (`--worker-kv-events`, or `kv_events` in
`POST /workers`); it runs one `ReplicaSubscription` task per such worker and hands every batch to
the policy's `on_kv_events`. A worker removed from the gateway is unsubscribed (the policy's
`on_worker_removed` drops its entries).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping

import zmq.asyncio

from dpserve.aio import cancel_and_wait, finish_all
from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.gateway.kv_events.subscriber import ReplicaSubscription
from dpserve.gateway.policies.base import Policy
from dpserve.kv_events.wire import KVEvent

log = logging.getLogger(__name__)


class KvEventFeed:
    """Subscriptions by worker id; only built when the policy `wants_kv_events`."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._ctx: zmq.asyncio.Context | None = None
        self._subs: dict[str, tuple[ReplicaSubscription, asyncio.Task[None]]] = {}

    def add(self, worker_id: str, endpoint: KvEventsEndpoint) -> None:
        """Subscribe to a worker's events (replacing an older subscription of the same id)."""
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        old = self._subs.pop(worker_id, None)
        if old is not None:
            old[1].cancel()
        sub = ReplicaSubscription(worker_id, endpoint, self._ctx, self._deliver)
        task = asyncio.create_task(self._run(sub), name=f"kv-events-{worker_id}")
        self._subs[worker_id] = (sub, task)

    async def remove(self, worker_id: str) -> None:
        entry = self._subs.pop(worker_id, None)
        if entry is not None:
            await cancel_and_wait(entry[1])

    def endpoint_of(self, worker_id: str) -> KvEventsEndpoint | None:
        entry = self._subs.get(worker_id)
        return None if entry is None else entry[0].endpoint

    async def stop(self) -> None:
        await finish_all([*(functools.partial(self.remove, w) for w in list(self._subs)), self._term])

    def _term(self) -> None:
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def gauges(self) -> Mapping[str, float]:
        subs = [s for s, _ in self._subs.values()]
        return {"dpserve_kv_events_batches_total": float(sum(s.stats.batches for s in subs)),
                "dpserve_kv_events_gaps_total": float(sum(s.stats.gaps for s in subs)),
                "dpserve_kv_events_state_losses_total": float(sum(s.stats.state_losses for s in subs))}

    def _deliver(self, worker_id: str, events: list[KVEvent]) -> None:
        if worker_id in self._subs:  # not after its removal
            self._policy.on_kv_events(worker_id, events)

    async def _run(self, sub: ReplicaSubscription) -> None:
        try:
            await sub.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not take routing down: that worker falls back
            log.exception("kv events: the subscription to %s failed; it is routed without events",
                          sub.worker_id)
