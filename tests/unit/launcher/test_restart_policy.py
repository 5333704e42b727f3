"""Restart backoff doubles, is capped, and gives up after --max-restarts within the window."""

from __future__ import annotations

from dpserve.launcher.restart_policy import RestartPolicy


def test_backoff_doubles_up_to_the_cap_then_gives_up() -> None:
    policy = RestartPolicy(max_restarts=4, window_s=100.0, backoff_base_s=1.0, backoff_max_s=5.0)
    assert [policy.on_exit(t) for t in (0.0, 1.0, 2.0, 3.0)] == [1.0, 2.0, 4.0, 5.0]
    assert policy.on_exit(4.0) is None


def test_restarts_older_than_the_window_are_forgotten() -> None:
    policy = RestartPolicy(max_restarts=2, window_s=10.0, backoff_base_s=1.0, backoff_max_s=60.0)
    assert policy.on_exit(0.0) == 1.0
    assert policy.on_exit(5.0) == 2.0
    assert policy.on_exit(20.0) == 1.0  # both earlier restarts fell out of the window
    assert policy.restarts_in_window(20.0) == 1


def test_zero_max_restarts_never_restarts() -> None:
    assert RestartPolicy(0, 10.0, 1.0, 1.0).on_exit(0.0) is None
