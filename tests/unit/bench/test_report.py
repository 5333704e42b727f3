"""Report JSON keys (the interface contract), goodput, worker share, and the printed table."""

from __future__ import annotations

import orjson
import pytest

from dpserve.bench.conversation import RequestResult
from dpserve.bench.report import SLO, build_report, format_table

CONTRACT_KEYS = {"completed", "failed", "duration_s", "request_throughput", "output_throughput"}
LATENCY = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")


def _ok(ttft: float, e2e: float, tokens: int, worker: str | None = "w0") -> RequestResult:
    gap = (e2e - ttft) / max(1, tokens - 1)
    return RequestResult(ok=True, ttft_s=ttft, e2e_s=e2e, output_tokens=tokens, prompt_tokens=10,
                         itl_s=[gap] * (tokens - 1), worker=worker)


def _results() -> list[RequestResult]:
    return [_ok(0.1, 1.1, 11, "w0"), _ok(0.2, 2.2, 11, "w1"), _ok(0.3, 0.3, 1, "w1"),
            RequestResult(ok=False, error="HTTP 503: busy", worker="w0")]


def test_contract_keys_and_values() -> None:
    report = build_report(_results(), duration_s=2.0)
    assert report.keys() >= CONTRACT_KEYS
    for key in LATENCY:
        assert set(report[key]) == {"mean", "p50", "p90", "p99"}
    assert report["completed"] == 3 and report["failed"] == 1
    assert report["request_throughput"] == pytest.approx(1.5)
    assert report["output_throughput"] == pytest.approx(23 / 2.0)
    assert report["total_input_tokens"] == 30
    assert report["ttft_ms"]["p50"] == pytest.approx(200.0)
    # TPOT from requests with >= 2 tokens: 100 ms and 200 ms
    assert report["tpot_ms"]["mean"] == pytest.approx(150.0)
    assert report["itl_ms"]["mean"] == pytest.approx(150.0)
    assert report["e2e_ms"]["p99"] == pytest.approx(1100 + 0.98 * 1100)  # rank 1.98 of [300, 1100, 2200]
    assert report["errors"] == {"HTTP 503: busy": 1}
    orjson.dumps(report)  # serialisable


def test_worker_share_counts_completed() -> None:
    report = build_report([*_results(), _ok(0.1, 0.2, 2, None)], duration_s=1.0)
    assert report["worker_requests"] == {"(no header)": 1, "w0": 1, "w1": 2}
    assert report["worker_share"]["w1"] == pytest.approx(0.5)


def test_goodput() -> None:
    assert "goodput" not in build_report(_results(), 1.0)
    report = build_report(_results(), duration_s=2.0, slo=SLO(ttft_ms=250, tpot_ms=150))
    # ok #1 (ttft 100, tpot 100) good; #2 tpot 200 bad; #3 ttft 300 bad
    assert report["goodput"]["good_requests"] == 1
    assert report["goodput"]["request_goodput"] == pytest.approx(0.5)


def test_empty_run_reports_nulls() -> None:
    report = build_report([], duration_s=0.0)
    assert report["completed"] == 0 and report["ttft_ms"]["p99"] is None
    assert "Successful requests" in format_table(report)


def test_table_shows_numbers() -> None:
    report = build_report(_results(), 2.0, slo=SLO(ttft_ms=250),
                          extra={"prefix_cache_hit_rate": 0.75,
                                 "replica_request_share": {"http://r1": 0.25, "http://r2": None}})
    table = format_table(report)
    for needle in ("Output throughput (tok/s)", "11.50", "ttft_ms", "p99", "w1:", "66.7%",
                   "Prefix cache hit rate", "0.75", "goodput", "HTTP 503",
                   "http://r1:", "25.0%"):
        assert needle in table
