"""Prometheus parsing of vLLM's counters; hit rate and per-replica request share from their deltas."""

from __future__ import annotations

import pytest

from dpserve.bench.replica_counters import (
    HITS,
    QUERIES,
    REQUESTS,
    Counters,
    counters_report,
    metric_sum,
    metrics_url,
)

TEXT = """# HELP vllm:prefix_cache_queries_total Prefix cache queries.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{model_name="m",engine="0"} 1000.0
vllm:prefix_cache_queries_total{model_name="m",engine="1"} 500
vllm:prefix_cache_queries_total_created{model_name="m"} 1.7e9
vllm:prefix_cache_hits_total 250.0
vllm:request_success_total{finished_reason="stop"} 3
vllm:request_success_total{finished_reason="length"} 4
"""


def test_metric_sum_sums_label_sets_and_skips_longer_names() -> None:
    assert metric_sum(TEXT, QUERIES) == 1500.0
    assert metric_sum(TEXT, HITS) == 250.0
    assert metric_sum(TEXT, REQUESTS) == 7.0
    assert metric_sum(TEXT, "vllm:num_requests_running") is None


def test_hit_rate_and_share_from_deltas() -> None:
    urls = ["http://a", "http://b", "http://c"]
    before = [Counters(100, 10, 1), Counters(0, 0, 0), None]
    after = [Counters(300, 110, 4), Counters(200, 50, 1), Counters(5, 5, 9)]
    out = counters_report(urls, before, after)
    assert out["prefix_cache_hit_rate"] == pytest.approx(150 / 400)
    assert out["replicas"]["http://a"]["hit_rate"] == pytest.approx(0.5)
    assert out["replicas"]["http://c"]["hit_rate"] is None
    assert out["replica_request_share"] == {"http://a": pytest.approx(0.75), "http://b": pytest.approx(0.25)}


def test_missing_counters_and_no_queries() -> None:
    out = counters_report(["u", "v"], [Counters(5, 1, None), Counters(None, None, 2)],
                          [Counters(5, 1, None), Counters(None, None, 2)])
    assert out["prefix_cache_hit_rate"] is None
    assert out["replica_request_share"] == {"v": None}


def test_metrics_url_accepts_base_or_full() -> None:
    assert metrics_url("http://h:1/") == "http://h:1/metrics"
    assert metrics_url("http://h:1/metrics") == "http://h:1/metrics"
