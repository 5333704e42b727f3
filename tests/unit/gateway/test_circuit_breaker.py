"""CircuitBreaker: closed → open after N failures, half-open after cool-down with limited trials."""

from __future__ import annotations

from dpserve.gateway.circuit_breaker import CircuitBreaker, CircuitState
from dpserve.gateway.config import BreakerConfig
from tests.unit.gateway.fakes import FakeClock


def _breaker(clock: FakeClock, transitions: list[tuple[str, str]]) -> CircuitBreaker:
    cfg = BreakerConfig(breaker_failure_threshold=3, breaker_success_threshold=2, breaker_cooldown_s=5.0,
                        breaker_half_open_max_requests=1)
    return CircuitBreaker(cfg, clock, lambda a, b: transitions.append((a.value, b.value)))


def test_opens_after_consecutive_failures_only() -> None:
    clock, moves = FakeClock(), []
    b = _breaker(clock, moves)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the streak
    b.record_failure()
    b.record_failure()
    assert b.state is CircuitState.CLOSED and b.allows_request()
    b.record_failure()
    assert b.state is CircuitState.OPEN and not b.allows_request()
    assert moves == [("closed", "open")]


def test_half_open_admits_limited_trials_then_closes() -> None:
    clock, moves = FakeClock(), []
    b = _breaker(clock, moves)
    for _ in range(3):
        b.record_failure()
    clock.advance(4.9)
    assert not b.allows_request()
    clock.advance(0.2)
    assert b.state is CircuitState.HALF_OPEN and b.allows_request()
    b.on_dispatch()
    assert not b.allows_request()  # one trial at a time
    b.record_success()
    assert b.state is CircuitState.HALF_OPEN and b.allows_request()
    b.on_dispatch()
    b.record_success()
    assert b.state is CircuitState.CLOSED
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_failed_trial_reopens_and_neutral_frees_the_slot() -> None:
    clock, moves = FakeClock(), []
    b = _breaker(clock, moves)
    for _ in range(3):
        b.record_failure()
    clock.advance(5)
    b.on_dispatch()
    b.record_neutral()  # client went away: no verdict, slot freed
    assert b.state is CircuitState.HALF_OPEN and b.allows_request()
    b.on_dispatch()
    b.record_failure()
    assert b.state is CircuitState.OPEN and not b.allows_request()
    clock.advance(5)
    assert b.state is CircuitState.HALF_OPEN
