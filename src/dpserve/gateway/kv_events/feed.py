"""KvEventFeed: the gateway's subscriptions to its workers' KV events, started and stopped with it.

The gateway tells it which workers publish where (`--worker-kv-events`, or `kv_events` in
`POST /workers`); it runs one `ReplicaSubscription` task per such worker and hands every batch to
the policy's `on_kv_events`. A worker removed from the gateway is unsubscribed (the policy's
`on_worker_removed` drops its entries).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping

import zmq.asyncio

from dpserve.aio import cancel_and_wait, finish_all
from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.gateway.kv_events.subscriber import ReplicaSubscription
from dpserve.gateway.policies.base import Policy
from dpserve.kv_events.wire import AllBlocksCleared, KVEvent
from dpserve.log import ThrottledLog

log = logging.getLogger(__name__)
RESTART_AFTER_S = 5.0


class KvEventFeed:
    """Subscriptions by worker id; only built when the policy `wants_kv_events`."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._ctx: zmq.asyncio.Context | None = None
        self._subs: dict[str, tuple[ReplicaSubscription, asyncio.Task[None]]] = {}
        self._warn = ThrottledLog(log)

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
                "dpserve_kv_events_state_losses_total": float(sum(s.stats.state_losses for s in subs)),
                "dpserve_kv_events_malformed_total": float(sum(s.stats.malformed for s in subs)),
                "dpserve_kv_events_restarts_total": float(sum(s.stats.restarts for s in subs))}

    def _deliver(self, worker_id: str, events: list[KVEvent]) -> None:
        if worker_id in self._subs:  # not after its removal
            self._policy.on_kv_events(worker_id, events)

    async def _run(self, sub: ReplicaSubscription) -> None:
        """The subscription, restarted after a pause if it fails (a bug, not a publisher's doing:
        those cost the replica its state only). Its state is cleared first, never left stale."""
        while True:
            try:
                await sub.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                sub.stats.restarts += 1
                if sub.stats.restarts == 1:  # the traceback once; then a throttled line
                    log.exception("kv events: the subscription to %s failed; its cache state is cleared "
                                  "and it is subscribed again in %.0f s", sub.worker_id, RESTART_AFTER_S)
                else:
                    self._warn.warning(sub.worker_id, "kv events: the subscription to %s failed again "
                                       "(%s: %s); retried every %.0f s", sub.worker_id, type(exc).__name__,
                                       exc, RESTART_AFTER_S)
            sub.next_seq = None
            with contextlib.suppress(Exception):  # logged above; the index drops the worker on its own
                self._deliver(sub.worker_id, [AllBlocksCleared()])
            await asyncio.sleep(RESTART_AFTER_S)
