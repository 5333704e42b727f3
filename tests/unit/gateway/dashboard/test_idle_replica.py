"""When load stops: the load poller scrapes an idle replica exactly once more (its final counters),
and the dashboard's rates fall to 0 within the rate window and its last-minute figures age out,
instead of repeating the last busy scrape's numbers (the real LoadPoller, a fake clock and HTTP)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from types import TracebackType

import pytest

from dpserve.diagnosis import State
from dpserve.gateway.dashboard.replica_history import MINUTE_S, RATE_WINDOW_S, ReplicaStats
from dpserve.gateway.loads import LoadPoller
from dpserve.gateway.worker import Worker
from dpserve.serving.engine_client import EngineStats
from tests.unit.gateway.dashboard.fleet import Fleet, make_fleet


class _Content:
    def __init__(self, body: bytes) -> None:
        self._body = body

    async def iter_any(self) -> AsyncIterator[bytes]:
        yield self._body


class _Answer:
    """What the poller reads of an aiohttp response: the status and the body's stream."""

    def __init__(self, text: str) -> None:
        self.status = 200
        self.content = _Content(text.encode())

    async def __aenter__(self) -> _Answer:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        return None


class _Http:
    """Answers GET {worker url}/metrics with the fleet's replica text; counts the GETs per worker."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self.gets: Counter[str] = Counter()

    def get(self, url: str, timeout: object) -> _Answer:
        worker = next(w for w in self._fleet.registry.all() if url.startswith(w.url + "/"))
        self.gets[worker.id] += 1
        return _Answer(self._fleet.replicas[worker.id].text())


def _second(fleet: Fleet, poller: LoadPoller) -> None:
    """One second: the poller's round (it picks whom to scrape), then the sampler's tick."""
    fleet.clock.advance(1.0)
    asyncio.run(poller.poll_once())
    fleet.sampler.tick()


def _stats(fleet: Fleet, worker: Worker) -> ReplicaStats:
    sample = fleet.sampler.latest
    assert sample is not None
    stats = next(r.stats for r in sample.replicas if r.worker_id == worker.id)
    assert stats is not None
    return stats


def test_an_idle_replica_gets_one_final_scrape_and_its_numbers_decay_then_age_out() -> None:
    fleet = make_fleet()
    busy, quiet = fleet.add("r0"), fleet.add("r1")
    http = _Http(fleet)
    poller = LoadPoller(fleet.registry.all, http, 1.0, 1.0,  # type: ignore[arg-type]
                        on_scrape=fleet.sampler.on_scrape, clock=fleet.clock)
    replica = fleet.replicas[busy.id]
    replica.stats = EngineStats(num_running=2, prefix_cache_queries=100, prefix_cache_hits=50)
    busy.in_flight = 2
    for _ in range(10):  # 10 requests a second of 20 tokens each, two running at every poll
        fleet.serve(busy, 10, tokens=20, ttft_s=0.05)
        _second(fleet, poller)
    assert _stats(fleet, busy).generation_tokens_per_s == pytest.approx(200.0)
    assert fleet.sampler.latest is not None and fleet.sampler.latest.fleet.generation_tokens_per_s == \
        pytest.approx(200.0)

    # Load stops between two polls: the last requests end after the last busy scrape.
    fleet.serve(busy, 10, tokens=20, ttft_s=0.05)
    replica.stats = EngineStats(prefix_cache_queries=140, prefix_cache_hits=60)
    busy.in_flight, busy.requests_ended = 0, busy.requests_ended + 2  # as the proxy's `finally` does
    gets_when_idle = http.gets[busy.id]
    rates = []
    for _ in range(int(RATE_WINDOW_S) + 3):
        _second(fleet, poller)
        rates.append(_stats(fleet, busy).generation_tokens_per_s)
    assert http.gets[busy.id] == gets_when_idle + 1  # exactly one final scrape, then none
    assert http.gets[quiet.id] == 1  # the replica that never worked: its first scrape only
    # The final scrape's counters are counted (the 10 last requests), then the 5 s rate falls to 0
    # within the window instead of repeating 200 tok/s.
    assert rates[0] == pytest.approx(200.0)
    assert all(a >= b for a, b in itertools.pairwise(rates)), rates
    assert rates[int(RATE_WINDOW_S)] == 0.0, rates
    sample = fleet.sampler.latest
    assert sample is not None and sample.fleet.generation_tokens_per_s == 0.0
    stats = _stats(fleet, busy)
    assert stats.prefix_cache_hit_rate == pytest.approx((60 - 50) / (140 - 100))  # the last minute's
    assert stats.ttft_p50_s is not None

    for _ in range(int(MINUTE_S)):
        _second(fleet, poller)
    stats = _stats(fleet, busy)
    assert (stats.prefix_cache_hit_rate, stats.ttft_p50_s, stats.ttft_p99_s) == (None, None, None)
    assert http.gets[busy.id] == gets_when_idle + 1
    sample = fleet.sampler.latest
    assert sample is not None and sample.diagnosis.fleet.state is State.IDLE

    # Work comes back: polled again at once, and its rate follows.
    busy.in_flight = 1
    fleet.serve(busy, 3, tokens=10)
    _second(fleet, poller)
    assert http.gets[busy.id] == gets_when_idle + 2
    assert _stats(fleet, busy).generation_tokens_per_s == pytest.approx(30 / RATE_WINDOW_S)


def test_a_request_that_begins_and_ends_between_two_polls_is_scraped() -> None:
    fleet = make_fleet()
    worker = fleet.add("r0")
    http = _Http(fleet)
    poller = LoadPoller(fleet.registry.all, http, 1.0, 1.0,  # type: ignore[arg-type]
                        on_scrape=fleet.sampler.on_scrape, clock=fleet.clock)
    _second(fleet, poller)
    _second(fleet, poller)
    assert http.gets[worker.id] == 1  # idle: not polled again
    worker.in_flight += 1  # what the proxy does around one short request
    fleet.serve(worker, 1, tokens=50)
    worker.in_flight -= 1
    worker.requests_ended += 1
    _second(fleet, poller)
    assert http.gets[worker.id] == 2
    assert _stats(fleet, worker).generation_tokens_per_s == pytest.approx(50 / 2)  # 2 s since the last
    _second(fleet, poller)
    assert http.gets[worker.id] == 2
