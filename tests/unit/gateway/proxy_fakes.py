"""Fakes for the proxy's unit tests: an upstream pool scripted per replica, a recording sink, a spy
breaker, a health checker that records refusals, and a `Proxy` wired to them with a fake clock."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dpserve.config import build_config
from dpserve.gateway.admission import AdmissionConfig, build_admission
from dpserve.gateway.aliases import ModelAliases
from dpserve.gateway.circuit_breaker import CircuitState
from dpserve.gateway.config import BreakerConfig, RetryConfig
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.migration.config import MigrationConfig
from dpserve.gateway.policies import build_policy
from dpserve.gateway.policies.config import PolicyConfig
from dpserve.gateway.proxy import Proxy
from dpserve.gateway.registry import WorkerRegistry
from dpserve.gateway.upstream import ConnectFailed, UpstreamError, UpstreamTimeout
from dpserve.gateway.worker import Worker
from tests.unit.gateway.fakes import FakeClock


@dataclass
class Answer:
    """A whole response (or, with `chunks`, a 200 stream: `then` is "end", "break" or "stall")."""

    status: int = 200
    body: bytes = b'{"choices": []}'
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    chunks: tuple[bytes, ...] | None = None
    then: str = "end"


REFUSE = ConnectFailed("refused")
NO_HEAD = UpstreamTimeout("no head in time")
BROKEN = UpstreamError("replica closed the connection")


class FakeResponse:
    def __init__(self, answer: Answer) -> None:
        self.status = answer.status
        self.headers = answer.headers
        self._answer = answer
        self._chunks = deque(answer.chunks or ())
        self.released = self.closed = False

    async def read(self, timeout_s: float | None = None) -> bytes:
        return self._answer.body

    async def next_chunk(self) -> bytes:
        if self._chunks:
            return self._chunks.popleft()
        if self._answer.then == "break":
            raise BROKEN
        return b""

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


class FakeUpstream:
    """`script[url]`: what each successive request to that replica meets (an exception or Answer)."""

    def __init__(self, script: dict[str, list[Answer | Exception]]) -> None:
        self.script = {url: deque(moves) for url, moves in script.items()}
        self.sent: list[tuple[str, str, bytes, dict[str, str]]] = []
        self.responses: list[FakeResponse] = []

    async def post(self, base_url: str, path: str, body: bytes, headers: Mapping[str, str],
                   timeout_s: float | None = None) -> FakeResponse:
        self.sent.append((base_url, path, body, dict(headers)))
        move = self.script[base_url].popleft()
        if isinstance(move, Exception):
            raise move
        resp = FakeResponse(move)
        self.responses.append(resp)
        return resp


class FakeSink:
    """Records what the client got; `gone_after_writes`: the client leaves at that write."""

    def __init__(self, gone_after_writes: int | None = None) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.writes = 0
        self.ended = False
        self.started = False
        self._gone_after = gone_after_writes

    async def whole(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body, self.started = status, headers, body, True

    async def start(self, headers: dict[str, str]) -> None:
        self.status, self.headers, self.started = 200, headers, True

    async def write(self, data: bytes) -> None:
        self.writes += 1
        if self._gone_after is not None and self.writes > self._gone_after:
            raise ConnectionResetError("client gone")
        self.body += data

    async def end(self) -> None:
        self.ended = True


class SpyBreaker:
    state = CircuitState.CLOSED

    def __init__(self) -> None:
        self.verdicts: list[str] = []

    def allows_request(self) -> bool:
        return True

    def on_dispatch(self) -> None:
        pass

    def record_success(self) -> None:
        self.verdicts.append("success")

    def record_failure(self) -> None:
        self.verdicts.append("failure")

    def record_neutral(self) -> None:
        self.verdicts.append("neutral")


class FakeHealth:
    def __init__(self) -> None:
        self.refused: list[str] = []

    def report_refused(self, worker: Worker) -> None:
        self.refused.append(worker.id)
        worker.healthy = False


@dataclass
class Rig:
    proxy: Proxy
    upstream: FakeUpstream
    workers: list[Worker]
    health: FakeHealth
    metrics: GatewayMetrics
    clock: FakeClock

    def breaker(self, index: int) -> SpyBreaker:
        return self.workers[index].breaker  # type: ignore[return-value]


def make_rig(script: dict[str, list[Answer | Exception]], **retry: Any) -> Rig:
    """A proxy over round-robin replicas named by the script's URLs (healthy, spy breakers); stream
    migration off unless `migration` says otherwise (its own tests script the token-id streams)."""
    replica_api_key = retry.pop("replica_api_key", None)
    migration = retry.pop("migration", MigrationConfig(stream_migration=False))
    clock = FakeClock()
    policy = build_policy(PolicyConfig(policy="round_robin", seed=1), clock=clock)
    registry = WorkerRegistry(policy, BreakerConfig(), clock, lambda weight: None)
    workers = []
    for url in script:
        worker = registry.add(url)
        worker.healthy, worker.breaker = True, SpyBreaker()  # type: ignore[assignment]
        workers.append(worker)
    upstream, health, metrics = FakeUpstream(script), FakeHealth(), GatewayMetrics("round_robin")
    config = build_config(RetryConfig, {"retry_backoff_base_s": 0.0, "retry_backoff_max_s": 0.0, **retry})
    proxy = Proxy(config, registry, policy, health, build_admission(AdmissionConfig(), registry, clock=clock),  # type: ignore[arg-type]
                  metrics, upstream, ModelAliases({}), random.Random(0), clock,  # type: ignore[arg-type]
                  migration, replica_api_key=replica_api_key)
    return Rig(proxy, upstream, workers, health, metrics, clock)
