"""EventRate: events per second over a sliding window, on an injected clock (drain/throughput)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

# Events are counted in buckets this wide so memory stays bounded at any request rate.
_BUCKET_S = 0.1


class EventRate:
    """Counts events (request completions) and reports their recent rate.

    The rate divides by the window, or by the time since counting began when that is shorter,
    so a fresh gateway does not underestimate its drain rate by the unfilled part of the window.
    Counting begins at `begin()` (the first admitted request) or else at the first event: not at
    the first completion, which made 2 completions right after a 2 s cold start read as 20/s
    and let a burst of 24 requests in behind them (issue 16).
    """

    def __init__(self, window_s: float, clock: Callable[[], float]) -> None:
        self._window_s = window_s
        self._clock = clock
        self._buckets: deque[list[float]] = deque()  # [bucket start, count]
        self._first_at: float | None = None

    def begin(self) -> None:
        """Work has started (the span of the rate runs from here); later calls change nothing."""
        if self._first_at is None:
            self._first_at = self._clock()

    def record(self, count: int = 1) -> None:
        now = self._clock()
        if self._first_at is None:
            self._first_at = now
        start = math.floor(now / _BUCKET_S) * _BUCKET_S
        if self._buckets and self._buckets[-1][0] == start:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([start, float(count)])
        self._trim(now)

    def per_second(self) -> float | None:
        """Events/s over the window; None when there was no event in it (no evidence)."""
        now = self._clock()
        self._trim(now)
        if not self._buckets or self._first_at is None:
            return None
        span = min(self._window_s, max(now - self._first_at, _BUCKET_S))
        return sum(b[1] for b in self._buckets) / span

    def _trim(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] + _BUCKET_S <= now - self._window_s:
            self._buckets.popleft()


def retry_after_s(backlog: int, rate_per_s: float | None, fallback_s: float,
                  *, floor_s: int = 1, ceiling_s: int = 300) -> int:
    """Whole seconds until `backlog` requests drain at `rate_per_s` (Retry-After header value).

    Without a measured rate there is no basis for a guess, so `fallback_s` is used.
    """
    seconds = fallback_s if not rate_per_s else backlog / rate_per_s
    return int(min(ceiling_s, max(floor_s, math.ceil(seconds))))
