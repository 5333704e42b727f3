"""ThrottledLog: the first warning of a kind at once, then one per interval with the count held back."""

from __future__ import annotations

import logging

import pytest

from dpserve.log import ThrottledLog


def test_repeats_are_held_back_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    warn = ThrottledLog(logging.getLogger("t"), every_s=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for _ in range(1000):
            warn.warning("bad", "peer %s sent garbage", "w1")
        warn.warning("other", "another kind")
        now[0] = 61.0
        warn.warning("bad", "peer %s sent garbage", "w1")
    assert [r.getMessage() for r in caplog.records] == [
        "peer w1 sent garbage", "another kind", "peer w1 sent garbage (999 more like this in the last 61 s)"]
