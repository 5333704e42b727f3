import pytest

from dpserve.gateway.admission.rate_window import EventRate, retry_after_s

from .fakes import FakeClock


def test_no_events_means_no_rate() -> None:
    assert EventRate(10.0, FakeClock()).per_second() is None


def test_rate_over_time_since_first_event_while_window_is_young() -> None:
    clock = FakeClock()
    rate = EventRate(10.0, clock)
    for _ in range(4):
        rate.record()
        clock.advance(0.5)
    assert rate.per_second() == pytest.approx(4 / 2.0)


def test_old_events_leave_the_window() -> None:
    clock = FakeClock()
    rate = EventRate(10.0, clock)
    rate.record(50)
    clock.advance(20.0)
    rate.record(10)
    assert rate.per_second() == pytest.approx(10 / 10.0)
    clock.advance(11.0)
    assert rate.per_second() is None


def test_retry_after_from_drain_rate_rounds_up_and_clamps() -> None:
    assert retry_after_s(10, 4.0, fallback_s=30) == 3
    assert retry_after_s(1, 100.0, fallback_s=30) == 1
    assert retry_after_s(10**6, 1.0, fallback_s=30) == 300
    assert retry_after_s(10, None, fallback_s=7.5) == 8


def test_rate_spans_from_when_work_began_not_the_first_completion() -> None:
    """2 requests started at t=0 finish at t=2: that is 1/s, not 2 per 0.1 s bucket."""
    clock = FakeClock()
    rate = EventRate(10.0, clock)
    rate.begin()
    clock.advance(2.0)
    rate.record(2)
    assert rate.per_second() == pytest.approx(1.0)
    rate.begin()  # later calls do not move the start
    assert rate.per_second() == pytest.approx(1.0)
