"""Progress output: periodic plain lines off a TTY, a redrawn bar on one."""

from __future__ import annotations

import io

from dpserve.bench.progress import Progress


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_interval_and_at_the_end() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = Progress(5, interval_s=10.0, stream=out, is_tty=False, clock=clock)
    for i in range(4):
        clock.now = 3.0 * (i + 1)
        progress.update(ok=i != 1)
    clock.now = 13.0
    progress.update(ok=True)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines == ["bench: 4/5 requests, 1 failed, 12.0s, 0.33 req/s",
                     "bench: 5/5 requests, 1 failed, 13.0s, 0.38 req/s"]


def test_tty_bar_redraws_in_place() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = Progress(2, interval_s=10.0, stream=out, is_tty=True, clock=clock)
    clock.now = 1.0
    progress.update(ok=True)
    clock.now = 2.0
    progress.update(ok=True)
    progress.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "[" + "#" * 30 + "] 2/2 requests" in text
