"""ReplicaHistory: token rates over 5 s, TTFT quantiles and prefix hit rate over the last minute,
counter resets, the diagnosis window, bounded memory."""

from __future__ import annotations

import pytest

from dpserve.gateway.dashboard.replica_history import ReplicaHistory
from dpserve.prometheus_text import parse_exposition
from dpserve.serving.engine_client import EngineStats
from tests.unit.gateway.dashboard.replica_text import ReplicaText


def _add(history: ReplicaHistory, t: float, replica: ReplicaText) -> None:
    history.add(t, parse_exposition(replica.text()))


def test_rates_are_over_the_last_five_seconds_and_quantiles_over_the_last_minute() -> None:
    replica, history = ReplicaText(), ReplicaHistory()
    assert history.stats() is None
    replica.finish(100, ttft_s=0.9)  # the first minute: slow
    for t in range(0, 61):
        _add(history, float(t), replica)
    replica.finish(100, ttft_s=0.03, tokens=20)  # after it: fast
    for t in range(61, 130):
        _add(history, float(t), replica)
    replica.finish(5, ttft_s=0.03, tokens=100)  # 500 tokens in the last second
    _add(history, 130.0, replica)
    stats = history.stats()
    assert stats is not None
    assert stats.generation_tokens_per_s == pytest.approx(500 / 5)
    # The 0.9 s requests are more than a minute old: only the 0.03 s ones count (bucket 0.02-0.04).
    assert stats.ttft_p99_s is not None and 0.02 < stats.ttft_p99_s <= 0.04
    assert len(history) <= 62  # a minute of 1 s scrapes plus the base


def test_prefix_hit_rate_running_waiting_and_kv_come_from_the_scrape() -> None:
    replica, history = ReplicaText(), ReplicaHistory()
    _add(history, 0.0, replica)
    replica.stats = EngineStats(num_running=7, num_waiting=3, kv_cache_usage=0.4, prefix_cache_queries=200,
                                prefix_cache_hits=50)
    _add(history, 1.0, replica)
    stats = history.stats()
    assert stats is not None
    assert (stats.running, stats.waiting, stats.kv_cache_usage) == (7, 3, 0.4)
    assert stats.prefix_cache_hit_rate == pytest.approx(0.25)
    assert stats.max_num_seqs is None  # not exported by this replica


def test_a_restarted_replica_counts_from_zero_not_negative() -> None:
    before, history = ReplicaText(), ReplicaHistory()
    before.finish(50, ttft_s=0.1)
    _add(history, 0.0, before)
    after = ReplicaText()  # the same replica after a restart: counters start again
    after.finish(2, ttft_s=0.1)
    _add(history, 1.0, after)
    stats = history.stats()
    assert stats is not None and stats.generation_tokens_per_s == pytest.approx(20.0)


def test_window_feeds_the_diagnosis_with_the_recent_scrapes() -> None:
    replica, history = ReplicaText(), ReplicaHistory()
    replica.stats = EngineStats(num_running=16, num_waiting=14, kv_cache_usage=0.4)
    for t in range(0, 40):
        _add(history, float(t), replica)
    window = history.window("r2", 15.0, healthy=True)
    assert (window.replica_id, window.running, window.waiting) == ("r2", 16, 14)
    assert window.kv_cache_usage == pytest.approx(0.4)


def test_an_older_or_repeated_scrape_is_ignored() -> None:
    replica, history = ReplicaText(), ReplicaHistory()
    _add(history, 5.0, replica)
    _add(history, 5.0, replica)
    _add(history, 4.0, replica)
    assert len(history) == 1


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-3", "1e308"])
def test_a_max_num_seqs_no_replica_could_have_is_unknown(value: str) -> None:
    history = ReplicaHistory()
    for t in (0.0, 1.0):
        history.add(t, parse_exposition(f"dpserve:max_num_seqs {value}\n"))
    stats = history.stats()
    assert stats is not None and stats.max_num_seqs is None
    assert history.window("w", 60.0, healthy=True).max_num_seqs is None
