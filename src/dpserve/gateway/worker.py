"""Worker: one replica as the gateway sees it — id, url, weight, health, circuit, in-flight, load."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dpserve.errors import HTTPError
from dpserve.gateway.circuit_breaker import STATE_VALUES, CircuitBreaker
from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint
from dpserve.gateway.loads import PolledLoad, combined_load

_REPLICA_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_RESTARTS = 10**9


@dataclass(frozen=True)
class ReplicaOrigin:
    """What a launcher says of the replica it adds (`POST /workers` fields `name`, `restarts`):
    its own name for it (`r0`, stable across restarts, unlike the worker id) and how many times it
    has restarted it. A worker added by hand has neither."""

    name: str | None = None
    restarts: int = 0


def replica_origin(body: Mapping[str, Any]) -> ReplicaOrigin:
    """The optional `name` and `restarts` of a `POST /workers` body; HTTPError 400 naming the field."""
    name, restarts = body.get("name"), body.get("restarts", 0)
    if name is not None and not (isinstance(name, str) and _REPLICA_NAME.fullmatch(name)):
        raise HTTPError(400, "'name' must be 1 to 64 characters of A-Z a-z 0-9 . _ -", param="name")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or not 0 <= restarts <= _MAX_RESTARTS:
        raise HTTPError(400, f"'restarts' must be an integer from 0 to {_MAX_RESTARTS}", param="restarts")
    return ReplicaOrigin(name, restarts)


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
    itself, so `http://host:port/v1` would become `/v1/v1/chat/completions`. Credentials in the
    URL (`user:pw@`) are refused: URLs are shown by /workers, /get_loads and the logs, and a
    replica's key belongs in --replica-api-key.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from exc
    if parts.scheme != "http":
        raise ValueError(f"{url!r} is not an http:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials (user:password@) are not accepted in a worker URL: they would be "
                         "shown by /workers and the logs; use --replica-api-key for a replica's key")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r} must be just http://host:port, without a path such as /v1")
    del port  # parsed only to reject out-of-range ports
    return f"http://{parts.netloc}"


class Worker:
    """Mutable runtime state of one replica; the registry owns it, the proxy counts in-flight.

    `in_flight` rises when a request is sent and falls when its response ends (the proxy does
    both, the fall in a `finally`); each fall also counts in `requests_ended`, which tells the load
    poller that the replica's counters moved since its last poll even when a request began and
    ended between two polls. `healthy` is set by health checks and by refused connections.
    """

    def __init__(self, worker_id: str, url: str, weight: float, breaker: CircuitBreaker,
                 origin: ReplicaOrigin = ReplicaOrigin()) -> None:
        self.id = worker_id
        self.origin = origin
        self.url = url.rstrip("/")
        self.weight = weight
        self.breaker = breaker
        self.healthy = False
        self.draining = False
        self.in_flight = 0
        self.requests_ended = 0
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
        # Where it publishes its KV events, as it was added (shown by /workers, so that another
        # gateway can subscribe to the same events), whether this gateway's policy uses them or not.
        self.kv_events: KvEventsEndpoint | None = None

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
                "draining": self.draining, "load": self.load(), "refused": self.refused,
                "name": self.origin.name, "restarts": self.origin.restarts,
                "kv_events": None if self.kv_events is None else self.kv_events.to_json()}

    @property
    def circuit_value(self) -> int:
        return STATE_VALUES[self.breaker.state]
