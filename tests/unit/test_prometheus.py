"""The shared Prometheus histogram: cumulative `le` buckets, +Inf, sum and count, with labels."""

from __future__ import annotations

from dpserve.prometheus import Histogram, histogram_block


def test_buckets_are_cumulative_with_le_semantics() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    assert h.sample_lines("x") == ['x_bucket{le="0.1"} 2', 'x_bucket{le="1.0"} 3', 'x_bucket{le="+Inf"} 4',
                                   "x_sum 3.65", "x_count 4"]


def test_labels_come_before_le() -> None:
    h = Histogram((1,))
    h.observe(2.0)
    assert h.sample_lines("x", 'a="b"') == ['x_bucket{a="b",le="1.0"} 0', 'x_bucket{a="b",le="+Inf"} 1',
                                            'x_sum{a="b"} 2.0', 'x_count{a="b"} 1']


def test_block_declares_the_type() -> None:
    lines = histogram_block("x_seconds", "help text", Histogram((0.5,)))
    assert lines[:2] == ["# HELP x_seconds help text", "# TYPE x_seconds histogram"]
    assert 'x_seconds_bucket{le="+Inf"} 0' in lines
