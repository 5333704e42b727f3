"""TokenBucket: the per-minute limiter math (the Redis Lua scripts implement the same rules)."""

from __future__ import annotations

from dpserve.gateway.admission.quota.base import WINDOW_S


class TokenBucket:
    """Holds up to `limit` units, refilling at limit/60 per second; may go into debt via `charge`.

    A full bucket allows a burst of `limit` at once, and `limit` per minute sustained.
    """

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self._level = float(limit)
        self._updated_at = now

    def level(self, now: float) -> float:
        refill = max(0.0, now - self._updated_at) * self.limit / WINDOW_S
        return min(float(self.limit), self._level + refill)

    def has(self, now: float, amount: float = 1.0) -> bool:
        return self.level(now) >= amount

    def charge(self, now: float, amount: float) -> None:
        """Take `amount` (the level may fall below zero: debt delays later requests); a negative
        amount gives back."""
        self._level = min(float(self.limit), self.level(now) - amount)  # a refund never overfills
        self._updated_at = now

    def seconds_until(self, now: float, amount: float = 1.0) -> float:
        """Time until the level reaches `amount`."""
        missing = amount - self.level(now)
        return max(0.0, missing * WINDOW_S / self.limit)
