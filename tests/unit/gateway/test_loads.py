"""Load signals: parsing vLLM gauges and combining the poll with in-flight change since the poll."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dpserve.gateway.loads import (
    KV_USAGE,
    RUNNING,
    WAITING,
    WAITING_WEIGHT,
    PolledLoad,
    combined_load,
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
    url: str = "http://x"
    healthy: bool = True


@pytest.mark.parametrize(("in_flight", "polled", "expected"), [
    (0, None, True),                              # never polled
    (0, PolledLoad(), False),                     # idle at the last poll and nothing of ours: skip
    (1, PolledLoad(), True),                      # ours in flight: the gauges move
    (0, PolledLoad(running=1), True),             # work at the last poll (ours ending, or another gateway's)
    (0, PolledLoad(waiting=2), True),
])
def test_only_replicas_whose_gauges_can_move_are_polled(in_flight: int, polled: PolledLoad | None,
                                                        expected: bool) -> None:
    assert needs_poll(_W(in_flight, polled)) is expected
