"""When to restart a replica that exited: exponential backoff, and a cap within a time window."""

from __future__ import annotations

from collections import deque


class RestartPolicy:
    """Pure bookkeeping over injected timestamps (seconds, any monotonic clock).

    The n-th restart within `window_s` waits backoff_base_s · 2^(n-1), capped at backoff_max_s.
    The (max_restarts + 1)-th exit within the window gives up.
    """

    def __init__(self, max_restarts: int, window_s: float, backoff_base_s: float,
                 backoff_max_s: float) -> None:
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._restarts: deque[float] = deque()

    def restarts_in_window(self, now: float) -> int:
        while self._restarts and now - self._restarts[0] > self.window_s:
            self._restarts.popleft()
        return len(self._restarts)

    def on_exit(self, now: float) -> float | None:
        """The delay before restarting after an exit at `now`, or None to give up."""
        recent = self.restarts_in_window(now)
        if recent >= self.max_restarts:
            return None
        self._restarts.append(now)
        return min(self.backoff_base_s * (2 ** recent), self.backoff_max_s)
