"""Open-loop arrival times: a gamma process (Poisson when burstiness is 1), as in vLLM's bench."""

from __future__ import annotations

import numpy as np


def arrival_offsets(count: int, request_rate: float | None, burstiness: float,
                    rng: np.random.Generator) -> list[float]:
    """Start time (s from the run start) of each of `count` arrivals.

    Inter-arrival gaps are Gamma(shape=burstiness, scale=1/(rate*burstiness)): mean 1/rate always;
    burstiness < 1 is burstier than Poisson, > 1 more regular. No rate → everything at t=0.
    """
    if request_rate is None:
        return [0.0] * count
    scale = 1.0 / (request_rate * burstiness)
    gaps = rng.gamma(shape=burstiness, scale=scale, size=count)
    return [float(t) for t in np.cumsum(gaps)]
