from __future__ import annotations

import math

import pytest

from dpserve.prometheus import Histogram
from dpserve.prometheus_text import bucket_delta, histogram_quantile, parse_exposition, rate

TEXT = """# HELP vllm:num_requests_running Requests in the running batch.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 3
vllm:num_requests_running{model_name="b"} 2.5
vllm:generation_tokens_total 1e3
bad line without value
vllm:x{unterminated 5
vllm:ttft_seconds_bucket{model_name="a",le="0.1"} 1
vllm:ttft_seconds_bucket{model_name="a",le="1.0"} 3
vllm:ttft_seconds_bucket{model_name="a",le="+Inf"} 4
vllm:ttft_seconds_bucket{model_name="b",le="0.1"} 1
vllm:ttft_seconds_bucket{model_name="b",le="1.0"} 1
vllm:ttft_seconds_bucket{model_name="b",le="+Inf"} 2
vllm:ttft_seconds_count{model_name="a"} 4
"""


def test_values_are_summed_over_label_sets_and_bad_lines_skipped() -> None:
    exp = parse_exposition(TEXT)
    assert exp.get("vllm:num_requests_running") == 5.5
    assert exp.get("vllm:generation_tokens_total") == 1000.0
    assert exp.get("vllm:ttft_seconds_count") == 4.0
    assert exp.get("missing") is None
    assert "vllm:x" not in exp.values


def test_buckets_are_summed_per_bound_and_sorted() -> None:
    exp = parse_exposition(TEXT)
    assert exp.buckets["vllm:ttft_seconds"] == ((0.1, 2.0), (1.0, 4.0), (math.inf, 6.0))


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = ((0.1, 2.0), (1.0, 4.0), (math.inf, 6.0))
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.9 * (3 - 2) / 2)
    assert histogram_quantile(0.2, buckets) == pytest.approx(0.1 * 1.2 / 2)
    assert histogram_quantile(0.99, buckets) == 1.0  # in +Inf: the largest finite bound
    assert histogram_quantile(0.5, ()) is None
    assert histogram_quantile(0.5, ((1.0, 0.0), (math.inf, 0.0))) is None


def test_quantile_of_our_own_histogram_round_trips() -> None:
    hist = Histogram((0.01, 0.1, 1.0))
    for v in (0.005, 0.05, 0.05, 0.5):
        hist.observe(v)
    exp = parse_exposition("\n".join(hist.sample_lines("h", 'model_name="m"')))
    assert exp.buckets["h"][-1] == (math.inf, 4.0)
    q = histogram_quantile(0.5, exp.buckets["h"])
    assert q is not None and 0.01 < q <= 0.1


def test_bucket_delta_and_counter_resets() -> None:
    before = ((0.1, 2.0), (math.inf, 3.0))
    after = ((0.1, 5.0), (math.inf, 9.0))
    assert bucket_delta(before, after) == ((0.1, 3.0), (math.inf, 6.0))
    assert bucket_delta(after, before) == before  # restarted replica: counts from zero
    assert bucket_delta(None, after) == after
    assert bucket_delta(before, None) == ()
    assert rate(10.0, 30.0, 4.0) == 5.0
    assert rate(30.0, 10.0, 5.0) == 2.0  # reset
    assert rate(None, 10.0, 0.0) == 0.0


def test_only_keeps_the_named_series_and_histograms_by_base_name() -> None:
    text = ('a_total{x="1"} 2\nb 3\nh_bucket{le="0.5"} 1\nh_bucket{le="+Inf"} 4\nh_sum 9\n'
            'g_bucket{le="1"} 7\n')
    exp = parse_exposition(text, only={"a_total", "h"})
    assert exp.values == {"a_total": 2.0}
    assert exp.buckets == {"h": ((0.5, 1.0), (math.inf, 4.0))}


TRICKY = TEXT + """vllm:ttft_seconds_bucket{le="0.1",model_name="c"} 5
vllm:ttft_seconds_bucket{model_name="x,le=\\"9\\""} 1
vllm:ttft_seconds_bucket{model_name="a", le="bad"} 7
vllm:ttft_seconds_bucket 2
vllm:ttft_seconds_sum{model_name="a"} 1.5
vllm:num_requests_running_total 99
vllm:num_requests_running{model_name="a"} NaN 1700000000000
vllm:num_requests_running{model_name="a"} oops
vllm:generation_tokens_total{a="}"} 10
vllm:generation_tokens_total{a="b"}} 1
  vllm:generation_tokens_total 5
vllm:generation_tokens_total\r
"""


@pytest.mark.parametrize("only", [
    {"vllm:num_requests_running", "vllm:ttft_seconds"},
    {"vllm:generation_tokens_total", "vllm:ttft_seconds_sum", "vllm:num_requests_running_total"},
    {"vllm:ttft_seconds", "vllm:ttft_seconds_bucket", "missing"},
    set(),
])
def test_only_reads_what_the_whole_parse_reads_for_those_series(only: set[str]) -> None:
    """`only` has its own fast reader (one regex); it must agree with the line-by-line parse."""
    whole, fast = parse_exposition(TRICKY), parse_exposition(TRICKY, only=only)

    def wanted(name: str) -> bool:
        return name in only or (name.endswith("_bucket") and name[: -len("_bucket")] in only)

    assert _nan_safe(fast.values) == _nan_safe({k: v for k, v in whole.values.items() if wanted(k)})
    assert fast.buckets == {k: b for k, b in whole.buckets.items() if k in only}


def _nan_safe(values: dict[str, float]) -> dict[str, object]:
    return {k: "nan" if math.isnan(v) else v for k, v in values.items()}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("line", [
    "vllm:num_requests_running{" + ' le="x' * 200_000 + "\n",  # many le=" and no closing brace
    "vllm:e2e_request_latency_seconds_bucket{" + ',le="1"' * 150_000 + "\n",
])
def test_a_hostile_line_is_read_in_linear_time(line: str) -> None:
    """A replica's /metrics (up to 8 MiB) is parsed on the gateway's loop for the dashboard: these
    1.2 MB lines took the quadratic pattern about a minute each; now a scan."""
    only = {"vllm:num_requests_running", "vllm:e2e_request_latency_seconds"}
    assert parse_exposition(line + "vllm:num_requests_running 3\n", only).values == {
        "vllm:num_requests_running": 3.0}


def test_le_is_found_after_a_label_whose_name_ends_in_le() -> None:
    """Both parses take `le` from the same helper: a `scale="…"` before it is not the bound (the
    full parse read no bound from this line before)."""
    text = 'h_bucket{scale="1",le="0.5"} 3\nh_bucket{scale="1",le="+Inf"} 4\n'
    for only in (None, {"h"}):
        assert parse_exposition(text, only).buckets == {"h": ((0.5, 3.0), (math.inf, 4.0))}
