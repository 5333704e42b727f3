"""CircuitBreaker: per-replica closed → open → half-open → closed state machine (injected clock)."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from dpserve.gateway.config import BreakerConfig


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Gauge values for dpserve_worker_circuit_state.
STATE_VALUES = {CircuitState.CLOSED: 0, CircuitState.OPEN: 1, CircuitState.HALF_OPEN: 2}


class CircuitBreaker:
    """Opens after N consecutive failures; after the cool-down admits a few trials; M successes close it.

    The proxy calls `allows_request()` when choosing candidates, `on_dispatch()` when it sends
    to this replica, then exactly one of `record_success()`, `record_failure()` or
    `record_neutral()` (the request ended with no verdict, e.g. the client went away).
    """

    def __init__(self, config: BreakerConfig, clock: Callable[[], float],
                 on_transition: Callable[[CircuitState, CircuitState], None] | None = None) -> None:
        self.config = config
        self._clock = clock
        self._on_transition = on_transition
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._successes = 0
        self._trials = 0
        self._opened_at = 0.0

    @property
    def state(self) -> CircuitState:
        cooled = self._clock() - self._opened_at >= self.config.breaker_cooldown_s
        if self._state is CircuitState.OPEN and cooled:
            self._move(CircuitState.HALF_OPEN)
        return self._state

    def allows_request(self) -> bool:
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            return False
        return self._trials < self.config.breaker_half_open_max_requests

    def on_dispatch(self) -> None:
        if self.state is CircuitState.HALF_OPEN:
            self._trials += 1

    def record_success(self) -> None:
        if self._state is CircuitState.HALF_OPEN:
            self._end_trial()
            self._successes += 1
            if self._successes >= self.config.breaker_success_threshold:
                self._move(CircuitState.CLOSED)
        else:
            self._failures = 0

    def record_failure(self) -> None:
        if self._state is CircuitState.HALF_OPEN:
            self._move(CircuitState.OPEN)
        elif self._state is CircuitState.CLOSED:
            self._failures += 1
            if self._failures >= self.config.breaker_failure_threshold:
                self._move(CircuitState.OPEN)

    def record_neutral(self) -> None:
        if self._state is CircuitState.HALF_OPEN:
            self._end_trial()

    def _end_trial(self) -> None:
        self._trials = max(0, self._trials - 1)

    def _move(self, new: CircuitState) -> None:
        old, self._state = self._state, new
        self._failures = self._successes = self._trials = 0
        if new is CircuitState.OPEN:
            self._opened_at = self._clock()
        if self._on_transition is not None and old is not new:
            self._on_transition(old, new)
