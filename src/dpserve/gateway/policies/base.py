"""The routing policy contract: choose one worker among candidates; no I/O, injected rng and clock."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from dpserve.gateway.policies.config import PolicyConfig


class Candidate(Protocol):
    """What a policy may read about a worker (the gateway's `Worker` satisfies it)."""

    @property
    def id(self) -> str: ...

    @property
    def weight(self) -> float: ...

    @property
    def in_flight(self) -> int: ...

    def load(self) -> float:
        """Polled load plus the in-flight change since the poll (not divided by weight)."""
        ...


@dataclass(frozen=True)
class RouteRequest:
    """What routing looks at: the routing text (whole conversation for chat) and the session key."""

    text: str = ""
    session_key: str | None = None


@dataclass(frozen=True)
class Choice:
    """A decision: the worker and why (a short reason label for the metrics)."""

    worker: Candidate
    reason: str


def weighted_load(worker: Candidate) -> float:
    """Load scaled by weight: a weight-2 worker looks half as busy at the same load."""
    return worker.load() / worker.weight


def least_loaded(candidates: Sequence[Candidate], rng: random.Random) -> Candidate:
    """Least weighted load, then least weighted in-flight; exact ties broken by `rng`."""
    if len(candidates) == 1:  # the usual cache hit: one holder, nothing to compare (rng untouched as before)
        return candidates[0]
    keyed = [((w.load() / w.weight, w.in_flight / w.weight), w) for w in candidates]
    best = min(k for k, _ in keyed)
    tied = [w for k, w in keyed if k == best]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


class Policy(ABC):
    """A routing policy. Constructed once per gateway as `cls(config, rng, clock)`.

    The gateway passes only routable workers (healthy, circuit allows, not draining, below cap,
    and on a retry not the ones already tried), never an empty sequence. A policy must not do
    I/O or sleep; randomness only from `self.rng`, time only from `self.clock`.
    """

    name: ClassVar[str]

    def __init__(self, config: PolicyConfig, rng: random.Random, clock: Callable[[], float]) -> None:
        self.config = config
        self.rng = rng
        self.clock = clock

    @abstractmethod
    def select(self, candidates: Sequence[Candidate], request: RouteRequest) -> Choice:
        """Pick one of `candidates` (non-empty) for `request`, with the reason."""

    def on_worker_added(self, worker: Candidate) -> None:  # noqa: B027 - optional hook
        """A worker joined the fleet (it may not be healthy yet). Default: nothing."""

    def on_worker_removed(self, worker_id: str) -> None:  # noqa: B027 - optional hook
        """A worker left the fleet for good: forget everything about it. Default: nothing."""

    def on_request_finished(self, worker: Candidate, request: RouteRequest, ok: bool) -> None:  # noqa: B027 - optional hook
        """A request sent to `worker` ended (`ok` False on failure). Default: nothing."""

    def gauges(self) -> Mapping[str, float]:
        """Extra Prometheus gauges (full metric name → value) this policy exposes. Default: none."""
        return {}
