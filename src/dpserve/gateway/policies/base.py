"""The routing policy contract: choose one worker among candidates; no I/O, injected rng and clock."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from dpserve.gateway.policies.config import PolicyConfig

if TYPE_CHECKING:
    from dpserve.kv_events.wire import KVEvent


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
    """What routing looks at: the routing text (whole conversation for chat) and the session key.

    `endpoint` and `body` are the parsed client request (for policies that tokenise it in
    `prepare`); `block_keys` are the prompt's KV block keys once a policy's `prepare` computed them.
    """

    text: str = ""
    session_key: str | None = None
    endpoint: str = ""
    body: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    block_keys: tuple[int, ...] | None = field(default=None, compare=False, repr=False)


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


def is_imbalanced(candidates: Sequence[Candidate], config: PolicyConfig) -> bool:
    """The imbalance guard of the cache-aware policies: max-min weighted load above
    --balance-abs-threshold and max above min × --balance-rel-threshold (then load beats cache)."""
    loads = [weighted_load(w) for w in candidates]
    low, high = min(loads), max(loads)
    return high - low > config.balance_abs_threshold and high > low * config.balance_rel_threshold


class Policy(ABC):
    """A routing policy. Constructed once per gateway as `cls(config, rng, clock)`.

    The gateway passes only routable workers (healthy, circuit allows, not draining, below cap,
    and on a retry not the ones already tried), never an empty sequence. A policy must not do
    I/O or sleep; randomness only from `self.rng`, time only from `self.clock`.
    """

    name: ClassVar[str]
    # True: the gateway subscribes to the workers' KV events and passes them to `on_kv_events`.
    wants_kv_events: ClassVar[bool] = False

    def __init__(self, config: PolicyConfig, rng: random.Random, clock: Callable[[], float]) -> None:
        self.config = config
        self.rng = rng
        self.clock = clock

    @abstractmethod
    def select(self, candidates: Sequence[Candidate], request: RouteRequest) -> Choice:
        """Pick one of `candidates` (non-empty) for `request`, with the reason."""

    async def prepare(self, request: RouteRequest) -> RouteRequest:
        """Called once per request before admission; may await CPU work done off the event loop
        (tokenising) and return the request with what `select` needs. Default: unchanged."""
        return request

    async def close(self) -> None:  # noqa: B027 - optional hook
        """The gateway stops: release what `prepare` started (worker processes). Default: nothing."""

    def on_kv_events(self, worker_id: str, events: Sequence[KVEvent]) -> None:  # noqa: B027 - optional hook
        """A worker's KV events, in order (AllBlocksCleared also when its state is lost: restart,
        disconnect, unrecoverable gap). Only called when `wants_kv_events`. Default: nothing."""

    def on_worker_added(self, worker: Candidate) -> None:  # noqa: B027 - optional hook
        """A worker joined the fleet (it may not be healthy yet). Default: nothing."""

    def on_worker_removed(self, worker_id: str) -> None:  # noqa: B027 - optional hook
        """A worker left the fleet for good: forget everything about it. Default: nothing."""

    def on_request_finished(self, worker: Candidate, request: RouteRequest, ok: bool) -> None:  # noqa: B027 - optional hook
        """A request sent to `worker` ended (`ok` False on failure). Default: nothing."""

    def gauges(self) -> Mapping[str, float]:
        """Extra Prometheus gauges (full metric name → value) this policy exposes. Default: none."""
        return {}
