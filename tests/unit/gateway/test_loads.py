"""Load signals: parsing vLLM gauges and combining the poll with in-flight change since the poll."""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dpserve.gateway.loads import (
    KV_USAGE,
    RUNNING,
    WAITING,
    WAITING_WEIGHT,
    LoadPoller,
    PolledLoad,
    combined_load,
    is_polled,
    needs_poll,
    parse_vllm_gauges,
)


def test_parse_sums_label_sets_and_ignores_others() -> None:
    text = ("# HELP vllm:num_requests_running x\n"
            'vllm:num_requests_running{model_name="a",engine="0"} 3.0\n'
            'vllm:num_requests_running{model_name="a",engine="1"} 2\n'
            "vllm:num_requests_waiting 4\n"
            'vllm:kv_cache_usage_perc{model_name="a"} 0.5\n'
            'vllm:num_requests_running_total{model_name="a"} 99\n'
            "other_metric 7\n"
            "vllm:num_requests_waiting garbage\n")
    assert parse_vllm_gauges(text) == {RUNNING: 5.0, WAITING: 4.0, KV_USAGE: 0.5}


def test_combined_load_adds_in_flight_change_since_poll() -> None:
    assert combined_load(None, 3) == 3.0
    polled = PolledLoad(running=4, waiting=1, in_flight_at_poll=2)
    assert combined_load(polled, 2) == WAITING_WEIGHT * 1 + 4
    assert combined_load(polled, 7) == WAITING_WEIGHT * 1 + 9   # a burst since the poll counts at once
    assert combined_load(polled, 0) == WAITING_WEIGHT * 1 + 2   # finished since the poll
    assert combined_load(PolledLoad(running=0, in_flight_at_poll=5), 0) == 0.0  # never negative


@dataclass
class _W:
    in_flight: int
    polled: PolledLoad | None
    requests_ended: int = 0
    url: str = "http://x"
    healthy: bool = True


@pytest.mark.parametrize(("in_flight", "ended", "polled", "expected"), [
    (0, 0, None, True),                              # never polled
    (0, 0, PolledLoad(), False),                     # idle at the last poll and nothing of ours: skip
    (1, 0, PolledLoad(), True),                      # ours in flight: the gauges move
    (0, 0, PolledLoad(running=1), True),             # work at the last poll (ours ending, another gateway's)
    (0, 0, PolledLoad(waiting=2), True),
    (0, 3, PolledLoad(ended_at_poll=2), True),       # one of ours ended after the poll: one final scrape
    (0, 3, PolledLoad(ended_at_poll=3), False),      # that final scrape was taken: idle, skip
])
def test_only_replicas_whose_gauges_can_move_are_polled(in_flight: int, ended: int, polled: PolledLoad | None,
                                                        expected: bool) -> None:
    assert needs_poll(_W(in_flight, polled, ended)) is expected
    assert is_polled(_W(in_flight, polled, ended, healthy=False)) is False


@pytest.mark.parametrize("mode", ["not-utf8", "gzip-bomb"])
async def test_a_replica_whose_metrics_cannot_be_read_keeps_its_last_poll(mode: str) -> None:
    """The /metrics body is the replica's: bytes that are not UTF-8 are read with replacement (they
    escaped the poll's `except` and ended the polling of every replica), and a body that inflates
    past the cap is refused without being held (http_body)."""
    async def metrics(request: web.Request) -> web.Response:
        if mode == "not-utf8":
            return web.Response(body=b"vllm:num_requests_running 3\n\xff\xfe\n",
                                headers={"Content-Type": "text/plain; charset=utf-8"})
        return web.Response(body=gzip.compress(b"0" * (20 * 2**20)), headers={"Content-Encoding": "gzip"})

    @dataclass
    class Replica:
        url: str
        id: str = "w0"
        in_flight: int = 0
        requests_ended: int = 0
        healthy: bool = True
        polled: PolledLoad | None = None
        most_running: int = 0
        saturated: bool = False

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        replica = Replica(f"http://127.0.0.1:{server.port}")
        async with aiohttp.ClientSession() as http:
            poller = LoadPoller(lambda: [replica], http, 1.0, 5.0)  # type: ignore[list-item]
            await poller.poll_once()  # raised UnicodeDecodeError before
        assert (replica.polled is not None and replica.polled.running == 3.0) if mode == "not-utf8" \
            else replica.polled is None
    finally:
        await server.close()
