"""Worker: one replica as the gateway sees it — id, url, weight, health, circuit, in-flight, load."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from dpserve.gateway.circuit_breaker import STATE_VALUES, CircuitBreaker
from dpserve.gateway.loads import PolledLoad, combined_load

# A weight is a relative share, so 1..100 expresses any mix; the bound keeps what a weight costs
# bounded too (consistent_hash places `--hash-virtual-nodes` × weight points on its ring).
MAX_WORKER_WEIGHT = 100.0


def check_worker_weight(weight: object) -> float:
    """A worker's weight as a float in (0, MAX_WORKER_WEIGHT]; ValueError says what is wrong."""
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight != weight:
        raise ValueError(f"weight must be a number, got {weight!r}")
    if not 0 < weight <= MAX_WORKER_WEIGHT:
        raise ValueError(f"weight must be > 0 and <= {MAX_WORKER_WEIGHT:g}, got {weight!r}")
    return float(weight)


def check_worker_url(url: str) -> str:
    """The replica base URL (`http://host[:port]`, no trailing slash); ValueError says what is wrong.

    A replica is addressed by scheme, host and port only: the gateway appends the OpenAI paths
    itself, so `http://host:port/v1` would become `/v1/v1/chat/completions`.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from exc
    if parts.scheme != "http":
        raise ValueError(f"{url!r} is not an http:// URL")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r} must be just http://host:port, without a path such as /v1")
    del port  # parsed only to reject out-of-range ports
    return f"http://{parts.netloc}"


class Worker:
    """Mutable runtime state of one replica; the registry owns it, the proxy counts in-flight.

    `in_flight` rises when a request is sent and falls when its response ends (the proxy does
    both, the fall in a `finally`). `healthy` is set by health checks and by refused connections.
    """

    def __init__(self, worker_id: str, url: str, weight: float, breaker: CircuitBreaker) -> None:
        self.id = worker_id
        self.url = url.rstrip("/")
        self.weight = weight
        self.breaker = breaker
        self.healthy = False
        self.draining = False
        self.in_flight = 0
        self.polled: PolledLoad | None = None
        # Most requests its polls showed running at once: a lower bound of its slots (max_num_seqs),
        # exact once a poll showed requests waiting beside them (saturated).
        self.most_running = 0
        self.saturated = False
        # Model ids from the replica's /v1/models; None until known (then it is not filtered).
        self.models: frozenset[str] | None = None
        # The model cards of that answer, as the replica sent them (the gateway's /v1/models).
        self.model_cards: tuple[dict[str, Any], ...] = ()
        # Per served model, what it runs (replica_identity.py); and why it was refused, if it was.
        self.identity: dict[str, dict[str, str]] | None = None
        self.refused: str | None = None

    def load(self) -> float:
        return combined_load(self.polled, self.in_flight)

    def slots(self, cap: int | None) -> int:
        """Requests it runs at once, as far as the gateway knows: the cap, or what it was seen
        running — plus one while it was never seen full, so the estimate can discover more room
        (with the TTFT SLO nothing may queue, and slots that are never tried are never seen)."""
        return max(1, self.most_running + (0 if self.saturated else 1), cap or 0)

    def may_serve(self, model: str | None) -> bool:
        return model is None or self.models is None or model in self.models

    def is_routable(self) -> bool:
        """Healthy, not draining, not refused, and the circuit lets a request through."""
        return self.healthy and not self.draining and self.refused is None and self.breaker.allows_request()

    def to_json(self) -> dict[str, Any]:
        polled = self.polled or PolledLoad()
        return {"id": self.id, "url": self.url, "healthy": self.healthy,
                "circuit_state": self.breaker.state.value, "in_flight": self.in_flight,
                "running": polled.running, "waiting": polled.waiting,
                "kv_cache_usage": polled.kv_cache_usage, "weight": self.weight,
                "draining": self.draining, "load": self.load(), "refused": self.refused}

    @property
    def circuit_value(self) -> int:
        return STATE_VALUES[self.breaker.state]
