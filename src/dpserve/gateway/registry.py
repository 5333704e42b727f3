"""WorkerRegistry: the fleet — hot add/remove, drain, routable candidates, the admission capacity view."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Sequence

from dpserve.aio import wait_for
from dpserve.gateway.admission import WorkerLoad
from dpserve.gateway.circuit_breaker import CircuitBreaker, CircuitState
from dpserve.gateway.config import BreakerConfig
from dpserve.gateway.policies.base import Policy
from dpserve.gateway.worker import ReplicaOrigin, Worker


class DuplicateWorker(ValueError):
    """A worker with this URL is already registered."""


# How often a drain re-checks in-flight when no response ended (responses also wake it).
_DRAIN_POLL_S = 0.05


class WorkerRegistry:
    """Owns the Worker objects; tells the policy about arrivals and departures.

    `worker_cap(weight)` is admission's in-flight cap (None = uncapped); candidates exclude
    workers at their cap, so admission and routing agree on what "capacity" means. With
    `slots_first` (a TTFT SLO is set) candidates are only the workers where a request would wait
    least, so the policy chooses among them.
    """

    def __init__(self, policy: Policy, breaker_config: BreakerConfig, clock: Callable[[], float],
                 worker_cap: Callable[[float], int | None],
                 on_transition: Callable[[str, CircuitState, CircuitState], None] | None = None,
                 *, slots_first: bool = False) -> None:
        self._policy = policy
        self._breaker_config = breaker_config
        self._clock = clock
        self._worker_cap = worker_cap
        self._on_transition = on_transition
        self._slots_first = slots_first  # route where a request waits least (TTFT SLO mode)
        self._workers: dict[str, Worker] = {}
        self._ids = itertools.count()
        self._finished = asyncio.Event()

    def all(self) -> list[Worker]:
        return list(self._workers.values())

    def get(self, worker_id: str) -> Worker | None:
        return self._workers.get(worker_id)

    def add(self, url: str, weight: float = 1.0, origin: ReplicaOrigin = ReplicaOrigin()) -> Worker:
        url = url.rstrip("/")
        if any(w.url == url for w in self._workers.values()):
            raise DuplicateWorker(f"a worker with url {url} is already registered")
        worker_id = f"w{next(self._ids)}"
        notify = self._on_transition
        breaker = CircuitBreaker(self._breaker_config, self._clock,
                                 None if notify is None else lambda old, new: notify(worker_id, old, new))
        worker = Worker(worker_id, url, weight, breaker, origin)
        self._workers[worker_id] = worker
        self._policy.on_worker_added(worker)
        return worker

    def remove(self, worker_id: str) -> None:
        if self._workers.pop(worker_id, None) is not None:
            self._policy.on_worker_removed(worker_id)

    async def drain(self, worker: Worker, timeout_s: float) -> None:
        """Stop new requests to `worker`, wait (bounded) for its in-flight ones, then remove it."""
        worker.draining = True
        deadline = self._clock() + timeout_s
        while worker.in_flight > 0 and self._clock() < deadline:
            self._finished.clear()
            with contextlib.suppress(TimeoutError):
                await wait_for(self._finished.wait(), _DRAIN_POLL_S)
        self.remove(worker.id)

    def notify_finished(self) -> None:
        """A response ended somewhere (wakes drains)."""
        self._finished.set()

    def below_cap(self, worker: Worker) -> bool:
        cap = self._worker_cap(worker.weight)
        return cap is None or worker.in_flight < cap

    def candidates(self, exclude: Sequence[Worker] = (), model: str | None = None) -> list[Worker]:
        found = [w for w in self._workers.values()
                 if w.is_routable() and self.below_cap(w) and w not in exclude and w.may_serve(model)]
        return self._least_queued(found) if self._slots_first and len(found) > 1 else found

    def _least_queued(self, workers: list[Worker]) -> list[Worker]:
        """Those where a request would queue least (any with a free slot first): with a TTFT SLO,
        admission promised a wait computed for the fleet, so no policy may pile requests onto a
        full replica while another has room (cache_aware did: 10 s TTFTs with a 2 s SLO)."""
        def queued(w: Worker) -> int:
            return max(0, w.in_flight + 1 - w.slots(self._worker_cap(w.weight)))
        least = min(queued(w) for w in workers)
        return [w for w in workers if queued(w) == least]

    def served_models(self) -> set[str] | None:
        """Models the healthy workers serve, or None when some healthy worker's are not known yet."""
        models: set[str] = set()
        for w in self._workers.values():
            if w.healthy and not w.draining and w.refused is None:
                if w.models is None:
                    return None
                models |= w.models
        return models

    def any_ready(self) -> bool:
        return any(w.healthy and not w.draining for w in self._workers.values())

    # CapacityView for admission
    def has_capacity(self) -> bool:
        return any(w.is_routable() and self.below_cap(w) for w in self._workers.values())

    def load_snapshot(self) -> Sequence[WorkerLoad]:
        out = []
        for w in self._workers.values():
            p = w.polled
            out.append(WorkerLoad(w.id, w.healthy and not w.draining, w.in_flight,
                                  int(p.running) if p else 0, int(p.waiting) if p else 0, w.weight,
                                  p.in_flight_at_poll if p else 0, w.slots(self._worker_cap(w.weight))))
        return out
