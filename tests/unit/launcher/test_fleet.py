"""Supervision timings derived from the launch flags."""

from __future__ import annotations

from dpserve.launcher.config import LaunchConfig
from dpserve.launcher.fleet import supervision_times


def test_liveness_zero_means_off() -> None:
    assert supervision_times(LaunchConfig(liveness_timeout_s=0)).liveness_timeout_s is None


def test_liveness_is_probed_four_times_per_timeout_at_most_every_two_seconds() -> None:
    assert supervision_times(LaunchConfig(liveness_timeout_s=1.0)).liveness_interval_s == 0.25
    assert supervision_times(LaunchConfig(liveness_timeout_s=60.0)).liveness_interval_s == 2.0


def test_startup_and_grace_come_from_the_flags() -> None:
    config = LaunchConfig(startup_timeout_s=9.0, ready_poll_interval_s=0.5, replica_grace_s=3.0)
    times = supervision_times(config)
    assert (times.startup_timeout_s, times.ready_poll_interval_s, times.grace_s) == (9.0, 0.5, 3.0)
