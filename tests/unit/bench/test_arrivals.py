"""Open-loop arrivals: Poisson/gamma statistics with stated tolerances (seeded, so exact reruns)."""

from __future__ import annotations

import numpy as np
import pytest

from dpserve.bench.arrivals import arrival_offsets

N = 20_000


def _gaps(rate: float, burstiness: float, seed: int = 0) -> np.ndarray:
    times = arrival_offsets(N, rate, burstiness, np.random.default_rng(seed))
    return np.diff([0.0, *times])


@pytest.mark.parametrize("rate", [0.5, 10.0, 200.0])
def test_poisson_mean_and_cv(rate: float) -> None:
    gaps = _gaps(rate, 1.0)
    # mean gap 1/rate within 3% (standard error is 1/sqrt(N) ≈ 0.7%); exponential CV = 1 within 5%
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    assert (gaps >= 0).all()


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_burstiness_keeps_rate_changes_cv(burstiness: float) -> None:
    gaps = _gaps(10.0, burstiness)
    assert gaps.mean() == pytest.approx(0.1, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1 / np.sqrt(burstiness), rel=0.08)


def test_poisson_counts_per_window() -> None:
    # arrivals per 1 s window at rate 20: Poisson, so variance ≈ mean (dispersion within 10%)
    times = np.array(arrival_offsets(N, 20.0, 1.0, np.random.default_rng(1)))
    counts = np.bincount(times.astype(int))[:-1]
    assert counts.mean() == pytest.approx(20.0, rel=0.03)
    assert counts.var() / counts.mean() == pytest.approx(1.0, rel=0.1)


def test_no_rate_means_all_at_once() -> None:
    assert arrival_offsets(4, None, 1.0, np.random.default_rng(0)) == [0.0] * 4


def test_increasing_and_seeded() -> None:
    a = arrival_offsets(100, 3.0, 1.0, np.random.default_rng(9))
    assert a == sorted(a)
    assert a == arrival_offsets(100, 3.0, 1.0, np.random.default_rng(9))
