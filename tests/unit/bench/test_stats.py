"""Percentile math against hand-computed values and numpy's linear interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from dpserve.bench.stats import percentile, summarize_ms


def test_hand_computed() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile([5.0], 99) == 5.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # order does not matter


@pytest.mark.parametrize("q", [1, 25, 50, 90, 99, 99.9])
def test_matches_numpy(q: float) -> None:
    values = list(np.random.default_rng(0).lognormal(size=1001))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_errors() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_in_ms() -> None:
    out = summarize_ms([0.001, 0.002, 0.003])
    assert out["mean"] == pytest.approx(2.0)
    assert out["p50"] == pytest.approx(2.0)
    assert out["p99"] == pytest.approx(2.98)
    assert summarize_ms([]) == {"mean": None, "p50": None, "p90": None, "p99": None}
