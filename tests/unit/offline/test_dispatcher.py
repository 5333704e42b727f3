"""Dispatcher with a fake sender: exactly-once results, retries, dead replicas, ordered window."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from dpserve.offline.assignment import FifoAssigner, WorkItem
from dpserve.offline.client import Outcome
from dpserve.offline.dispatcher import Dispatcher, DispatchSettings, NoReplicaError
from dpserve.offline.progress import ProgressState
from dpserve.offline.reader import RequestRef
from dpserve.offline.records import BatchRequest
from dpserve.offline.replicas import BreakerSettings, ReplicaPool

OK = Outcome(200, {"usage": {"completion_tokens": 3}}, "rid", None)
DOWN = Outcome(None, None, None, "refused", is_retryable=True, replica_unreachable=True)
BAD = Outcome(400, {"error": {"message": "no"}}, None, "HTTP 400: no")
BUSY = Outcome(503, None, None, "HTTP 503", is_retryable=True)


class Sink:
    def __init__(self, window: int | None = None) -> None:
        self.lines: list[tuple[int, dict[str, Any]]] = []
        self.window = window

    def submit(self, seq: int, obj: dict[str, Any]) -> None:
        self.lines.append((seq, obj))

    def admits(self, seq: int) -> bool:
        return self.window is None or seq <= len(self.lines) + self.window


def _refs(n: int) -> list[RequestRef]:
    return [RequestRef(i, 0, 0, f"id-{i}") for i in range(1, n + 1)]


def _load(item: WorkItem) -> BatchRequest:
    return BatchRequest(item.ref.line_no, item.ref.custom_id, "/v1/completions", {})


async def _run(n: int, behaviour: dict[str, Any], *, max_retries: int = 2, inflight: int = 2,
               sink: Sink | None = None, timeout_s: float = 5.0,
               breaker_threshold: int = 1000) -> tuple[Sink, ProgressState, ReplicaPool]:
    """behaviour: url → Outcome or callable(custom_id) → Outcome."""
    pool = ReplicaPool(list(behaviour), clock=asyncio.get_running_loop().time,
                       breaker=BreakerSettings(failure_threshold=breaker_threshold))
    sink = sink or Sink()
    state = ProgressState(total=n, started_at=0.0)

    async def send(url: str, request: BatchRequest) -> Outcome:
        b = behaviour[url]
        outcome = b(request.custom_id) if callable(b) else b
        await asyncio.sleep(0)  # let other slots start while this one is "in flight"
        return outcome

    settings = DispatchSettings(inflight, max_retries, no_replica_timeout_s=timeout_s,
                                watchdog_interval_s=0.01)
    await Dispatcher(pool, FifoAssigner(_refs(n)), sink, _load, send, state, settings).run()
    return sink, state, pool


async def test_every_item_gets_exactly_one_line() -> None:
    sink, state, pool = await _run(50, {"http://a": OK, "http://b": OK})
    assert Counter(seq for seq, _ in sink.lines) == Counter(range(1, 51))
    assert state.done == 50 and state.output_tokens == 150
    assert sum(r.completed for r in pool.replicas) == 50


async def test_dead_replica_is_routed_around_without_losing_work() -> None:
    sink, state, pool = await _run(30, {"http://a": OK, "http://dead": DOWN})
    assert sorted(seq for seq, _ in sink.lines) == list(range(1, 31))
    assert all(line["error"] is None for _, line in sink.lines)
    dead = pool.replicas[1]
    assert not dead.is_healthy and dead.completed == 0 and dead.failed_attempts >= 1
    assert state.failed == 0 and state.retried == dead.failed_attempts


async def test_client_errors_are_final_and_not_retried() -> None:
    sink, state, _ = await _run(4, {"http://a": BAD, "http://b": BAD})
    assert state.failed == 4 and state.retried == 0
    assert all(line["response"]["status_code"] == 400 for _, line in sink.lines)


async def test_retries_stop_at_max_retries() -> None:
    sink, state, _ = await _run(3, {"http://a": BUSY, "http://b": BUSY}, max_retries=2)
    assert state.failed == 3 and state.retried == 6
    assert all(line["error"]["message"] == "HTTP 503" for _, line in sink.lines)


async def test_retry_succeeds_on_the_other_replica() -> None:
    sink, state, pool = await _run(10, {"http://a": BUSY, "http://b": OK}, max_retries=1)
    assert state.failed == 0 and len(sink.lines) == 10
    assert pool.replicas[1].completed == 10


async def test_all_replicas_down_raises_after_the_timeout() -> None:
    with pytest.raises(NoReplicaError, match="use --resume"):
        await _run(5, {"http://a": DOWN}, max_retries=100, timeout_s=0.05)


async def test_window_limits_how_far_ahead_work_starts() -> None:
    sink = Sink(window=2)
    ahead: list[int] = []  # line number minus lines already written, at each start

    def record(custom_id: str) -> Outcome:
        ahead.append(int(custom_id.split("-")[1]) - len(sink.lines))
        return OK

    await _run(12, {"http://a": record}, inflight=8, sink=sink)
    assert len(sink.lines) == 12
    assert max(ahead) == 2  # reaches the window (2 past the lines written) and never goes beyond


async def test_replica_failing_every_request_is_benched() -> None:
    sink, state, pool = await _run(40, {"http://bad": BUSY, "http://good": OK}, max_retries=1,
                                   breaker_threshold=3)
    assert state.failed == 0 and len(sink.lines) == 40
    bad = pool.replicas[0]
    assert not bad.is_healthy and bad.failed_attempts <= 3 + 1  # threshold + the other in-flight slot
