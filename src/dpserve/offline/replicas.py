"""The replicas a batch job uses: their health as the job sees it and what each one did."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass
class Replica:
    id: str
    url: str  # base URL, no trailing slash
    is_healthy: bool = True
    down_since: float | None = None
    probe_after: float = 0.0  # a down replica is not probed before this (breaker cool-down)
    consecutive_failures: int = 0
    trips: int = 0  # breaker trips since the last success
    in_flight: int = 0
    completed: int = 0
    failed_attempts: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class BreakerSettings:
    """A replica failing `failure_threshold` attempts in a row is benched for a cool-down that
    doubles with each trip (a replica that answers /health but fails every request would otherwise
    keep pulling work only to fail it)."""

    failure_threshold: int = 5
    cooldown_s: float = 1.0
    cooldown_max_s: float = 30.0


class ReplicaSource(Protocol):
    """Where replica URLs come from: given ones (--worker-urls) or co-launched ones."""

    async def start(self) -> list[str]:
        """Bring the replicas up (if launching) and return their base URLs once they are ready."""
        ...

    async def stop(self) -> None:
        """Stop whatever start() launched; nothing for given URLs."""
        ...

    def bind(self, pool: ReplicaPool) -> None:
        """The pool built from start()'s URLs, to update when a launched replica moves."""
        ...


class StaticReplicas:
    """--worker-urls: replicas someone else runs."""

    def __init__(self, urls: Sequence[str]) -> None:
        self._urls = [u.rstrip("/") for u in urls]

    async def start(self) -> list[str]:
        return list(self._urls)

    async def stop(self) -> None:
        return None

    def bind(self, pool: ReplicaPool) -> None:
        return None


class ReplicaPool:
    """All replicas of the job: down on transport errors or repeated failures, up when /health answers."""

    def __init__(self, urls: Sequence[str], clock: Callable[[], float],
                 breaker: BreakerSettings | None = None) -> None:
        self.replicas = [Replica(f"r{i}", url.rstrip("/")) for i, url in enumerate(urls)]
        self._clock = clock
        self._breaker = breaker or BreakerSettings()
        self._all_down_since: float | None = None

    def healthy_ids(self) -> frozenset[str]:
        return frozenset(r.id for r in self.replicas if r.is_healthy)

    def record_success(self, replica: Replica) -> None:
        replica.consecutive_failures = 0
        replica.trips = 0

    def record_failure(self, replica: Replica, *, unreachable: bool) -> None:
        """An attempt failed in a way that is not the request's fault (5xx, 429, timeout, transport)."""
        replica.failed_attempts += 1
        replica.consecutive_failures += 1
        if unreachable:
            self.mark_down(replica)
        elif replica.consecutive_failures >= self._breaker.failure_threshold and replica.is_healthy:
            replica.trips += 1
            cooldown = self._breaker.cooldown_s * 2 ** (replica.trips - 1)
            replica.probe_after = self._clock() + min(cooldown, self._breaker.cooldown_max_s)
            replica.consecutive_failures = 0
            self.mark_down(replica)

    def due_for_probe(self) -> list[Replica]:
        now = self._clock()
        return [r for r in self.replicas if not r.is_healthy and now >= r.probe_after]

    def set_url(self, replica_id: str, url: str) -> None:
        """A co-launched replica came back at another address (with --ray a restart may land on
        another node and port): use that from now on, down until the prober sees it healthy."""
        url = url.rstrip("/")
        for replica in self.replicas:
            if replica.id == replica_id and replica.url != url:
                replica.url = url
                self.mark_down(replica)

    def mark_down(self, replica: Replica) -> None:
        if replica.is_healthy:
            replica.is_healthy = False
            replica.down_since = self._clock()
            if not self.healthy_ids():
                self._all_down_since = self._clock()

    def mark_up(self, replica: Replica) -> None:
        replica.is_healthy = True
        replica.down_since = None
        self._all_down_since = None

    def all_down_for_s(self) -> float:
        """How long no replica has been healthy (0 while one is)."""
        return 0.0 if self._all_down_since is None else self._clock() - self._all_down_since
