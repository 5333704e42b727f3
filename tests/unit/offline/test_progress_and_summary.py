"""Progress rendering and the end-of-job summary, on fixed numbers."""

from __future__ import annotations

import asyncio
import io

from dpserve.offline.progress import ProgressReporter, ProgressState, render_bar, render_line
from dpserve.offline.replicas import Replica
from dpserve.offline.summary import build_summary, format_summary


def _state() -> ProgressState:
    return ProgressState(total=100, started_at=10.0, done=25, failed=2, retried=3, output_tokens=500)


def test_line_has_counts_rates_and_eta() -> None:
    line = render_line(_state(), now=20.0)
    assert "25/100 (25.0%)" in line and "2.50 req/s" in line and "50.0 tok/s" in line
    assert "failed=2" in line and "eta=00:30" in line


def test_bar_fills_in_proportion() -> None:
    bar = render_bar(_state(), now=20.0, width=20)
    assert bar.startswith("[#####...............]") and "ETA 00:30" in bar and "failed 2" in bar


def test_eta_unknown_before_first_result() -> None:
    assert "eta=--:--" in render_line(ProgressState(total=5, started_at=0.0), now=1.0)


async def test_reporter_prints_final_line_on_stop() -> None:
    stream = io.StringIO()
    reporter = ProgressReporter(_state(), stream, as_bar=False, interval_s=60.0, clock=lambda: 20.0)
    reporter.start()
    await asyncio.sleep(0)
    await reporter.stop()
    assert stream.getvalue().count("\n") == 1 and "25/100" in stream.getvalue()


async def test_bar_mode_redraws_one_line() -> None:
    stream = io.StringIO()
    reporter = ProgressReporter(_state(), stream, as_bar=True, interval_s=60.0, clock=lambda: 20.0)
    reporter.show()
    await reporter.stop()
    out = stream.getvalue()
    assert out.count("\r[") == 2 and out.count("\n") == 1 and out.endswith("\x1b[K\n")


def test_summary_counts_and_shares() -> None:
    state = _state()
    state.finished_at = 20.0
    replicas = [Replica("r0", "http://a", completed=18, output_tokens=400),
                Replica("r1", "http://b", completed=5, failed_attempts=3, output_tokens=100)]
    s = build_summary(state, replicas, input_requests=120, invalid_lines=1, skipped=20, now=99.0)
    assert (s.succeeded, s.failed, s.wall_time_s, s.request_throughput) == (23, 2, 10.0, 2.5)
    assert [round(r.share, 3) for r in s.replicas] == [0.783, 0.217]
    text = format_summary(s)
    assert "120 in input, 20 already done, 23 succeeded, 2 failed" in text and "r1 http://b: 5 ok" in text
