"""Run progress: a redrawn bar on a TTY, plain periodic lines otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 30
TTY_REDRAW_S = 0.1


class Progress:
    """Counts finished requests out of `total`; call `update(ok)` per request and `close()` once."""

    def __init__(self, total: int, *, interval_s: float, stream: TextIO | None = None,
                 is_tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if is_tty is None else is_tty
        self._interval_s = TTY_REDRAW_S if self._tty else interval_s
        self._clock = clock
        self._start = clock()
        self._last_draw = self._start

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        now = self._clock()
        if now - self._last_draw >= self._interval_s or self.done == self.total:
            self._last_draw = now
            self._draw(now)

    def line(self, now: float) -> str:
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.done}/{self.total} requests, {self.failed} failed, {elapsed:.1f}s, {rate:.2f} req/s"
        if not self._tty:
            return text
        filled = BAR_WIDTH * self.done // max(1, self.total)
        return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {text}"

    def _draw(self, now: float) -> None:
        if self._tty:
            self._stream.write("\r" + self.line(now))
        else:
            self._stream.write("bench: " + self.line(now) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()
