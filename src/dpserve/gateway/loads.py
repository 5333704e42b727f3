"""Load signals: replicas' vLLM gauges from /metrics, polled, combined with exact in-flight counts.

Polls lag; the gateway's own in-flight counter does not. A worker's load is its polled value
plus the in-flight change since that poll, so a burst between two polls does not herd onto the
replica that looked idle at the last poll.

A replica is polled only while its gauges can change under us: it has requests of ours in
flight, its last poll showed work, or a request of ours ended since that poll began. So when a
replica goes idle it gets exactly one more poll, taken after its last request ended: that
scrape's counters are final (the dashboard holds them until work comes back instead of repeating
the rate of a busy scrape), and then it is not polled again (its health probe goes on). A polled
one is not also health-probed (health.py), so each replica sees one poll per interval, not a
/health and two /metrics per second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from dpserve.aio import cancel_and_wait
from dpserve.http_body import BodyTooLarge, read_text
from dpserve.http_names import METRICS_PATH

logger = logging.getLogger(__name__)

# A request queued in a replica costs more than one already running (it waits for a slot).
WAITING_WEIGHT = 2.0
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"


@dataclass(frozen=True)
class PolledLoad:
    """One poll of a replica: its gauges and our in-flight count at that moment."""

    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0
    in_flight_at_poll: int = 0
    at: float = 0.0  # when it answered (the poller's clock): a recent answer also shows it is up
    # Our requests to it that had ended when the poll was sent: one ending later (even one that
    # began and ended between two polls) may have moved its counters after this scrape.
    ended_at_poll: int = 0

    @property
    def busy(self) -> bool:
        return self.running > 0 or self.waiting > 0


def combined_load(polled: PolledLoad | None, in_flight: int) -> float:
    """WAITING_WEIGHT × waiting + running estimated now (polled running + in-flight since poll)."""
    if polled is None:
        return float(in_flight)
    running_now = max(0.0, polled.running + in_flight - polled.in_flight_at_poll)
    return WAITING_WEIGHT * polled.waiting + running_now


def parse_vllm_gauges(text: str) -> dict[str, float]:
    """Sum of each of RUNNING, WAITING, KV_USAGE over its label sets, from Prometheus text."""
    wanted = (RUNNING, WAITING, KV_USAGE)
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        brace, space = line.find("{"), line.find(" ")
        if 0 <= brace < space:
            name, rest = line[:brace], line[line.rfind("}") + 1:]
        else:
            name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        try:
            value = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
        out[name] = out.get(name, 0.0) + value
    return out


class PolledWorker(Protocol):
    """What the poller needs of a worker (the gateway's Worker satisfies it)."""

    id: str
    url: str
    in_flight: int
    requests_ended: int  # how many of our requests to it have ended, ever
    polled: PolledLoad | None
    healthy: bool
    most_running: int
    saturated: bool


def needs_poll(worker: PolledWorker) -> bool:
    """Whether the replica's gauges or counters may have moved since its last poll: never polled,
    requests of ours in flight, work at the last poll (ours finishing, or another gateway's), or
    one of ours ended after that poll was sent (its last scrape may predate the final counts)."""
    polled = worker.polled
    return (polled is None or worker.in_flight > 0 or polled.busy
            or worker.requests_ended != polled.ended_at_poll)


def is_polled(worker: PolledWorker) -> bool:
    """Whether the poller will scrape it again: False means its last scrape still describes it."""
    return worker.healthy and needs_poll(worker)


# Told of each successful scrape with its text (the dashboard reads more series than load does,
# from the same scrape rather than a second one).
ScrapeListener = Callable[[PolledWorker, str], None]


class LoadPoller:
    """Background loop: every `interval_s`, GET /metrics of each healthy worker, store the gauges."""

    def __init__(self, workers: Callable[[], Iterable[PolledWorker]], http: aiohttp.ClientSession,
                 interval_s: float, timeout_s: float, on_scrape: ScrapeListener | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._workers = workers
        self._on_scrape = on_scrape
        self._clock = clock
        self._http = http
        self._interval_s = interval_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="load-poller")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def poll_once(self) -> None:
        targets = [w for w in self._workers() if is_polled(w)]
        await asyncio.gather(*(self._poll(w) for w in targets))

    async def _loop(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self._interval_s)

    async def _poll(self, worker: PolledWorker) -> None:
        ended_at_poll = worker.requests_ended  # before sending: an end during the poll polls again
        try:
            async with self._http.get(worker.url + METRICS_PATH, timeout=self._timeout) as resp:
                if resp.status != 200:
                    return
                in_flight_at_poll = worker.in_flight  # the count that the gauges reflect
                text = await read_text(resp)  # capped: the replica's answer is not ours to trust
                gauges = parse_vllm_gauges(text)
        except (aiohttp.ClientError, TimeoutError, BodyTooLarge):
            return  # health checks decide whether the replica is down; keep the last poll
        if self._on_scrape is not None:
            self._on_scrape(worker, text)
        worker.polled = PolledLoad(gauges.get(RUNNING, 0.0), gauges.get(WAITING, 0.0),
                                   gauges.get(KV_USAGE, 0.0), in_flight_at_poll, self._clock(),
                                   ended_at_poll)
        if worker.polled.waiting > 0 and not worker.saturated:  # full: its running count is its slots
            worker.most_running, worker.saturated = int(worker.polled.running), True
        else:
            worker.most_running = max(worker.most_running, int(worker.polled.running))
