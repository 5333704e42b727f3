"""Progress while the job runs: a redrawn bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from dpserve.aio import cancel_and_wait


@dataclass
class ProgressState:
    """Counters the dispatcher updates; `total` counts only the work of this run."""

    total: int
    started_at: float
    done: int = 0
    failed: int = 0
    retried: int = 0
    output_tokens: int = 0
    prompt_tokens: int = 0
    finished_at: float | None = field(default=None)

    def elapsed_s(self, now: float) -> float:
        return max((self.finished_at or now) - self.started_at, 1e-9)


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds + 0.5)
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60:02d}:{rem % 60:02d}"


def _rates(state: ProgressState, now: float) -> tuple[float, float, float | None]:
    """(requests/s, output tokens/s, ETA seconds or None before the first result)."""
    elapsed = state.elapsed_s(now)
    req_s = state.done / elapsed
    eta = (state.total - state.done) / req_s if req_s > 0 else None
    return req_s, state.output_tokens / elapsed, eta


def render_line(state: ProgressState, now: float) -> str:
    """A plain log-friendly progress line."""
    req_s, tok_s, eta = _rates(state, now)
    pct = 100.0 * state.done / state.total if state.total else 100.0
    return (f"batch: {state.done}/{state.total} ({pct:.1f}%) {req_s:.2f} req/s {tok_s:.1f} tok/s "
            f"failed={state.failed} retried={state.retried} elapsed={_fmt_duration(now - state.started_at)} "
            f"eta={_fmt_duration(eta)}")


def render_bar(state: ProgressState, now: float, width: int = 28) -> str:
    """One terminal line: [#####.....] done/total, rates, ETA, failures."""
    req_s, tok_s, eta = _rates(state, now)
    frac = state.done / state.total if state.total else 1.0
    filled = int(frac * width)
    bar = "#" * filled + "." * (width - filled)
    return (f"[{bar}] {state.done}/{state.total} {req_s:.1f} req/s {tok_s:.0f} tok/s "
            f"ETA {_fmt_duration(eta)} failed {state.failed}")


class ProgressReporter:
    """Background loop that shows `state` every interval until stop()."""

    def __init__(self, state: ProgressState, stream: TextIO, *, as_bar: bool, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._state = state
        self._stream = stream
        self._as_bar = as_bar
        self._interval_s = interval_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self.show(final=True)

    def show(self, final: bool = False) -> None:
        now = self._clock()
        if self._as_bar:
            # \x1b[K clears what a longer previous bar left at the end of the line.
            self._stream.write("\r" + render_bar(self._state, now) + "\x1b[K" + ("\n" if final else ""))
        else:
            self._stream.write(render_line(self._state, now) + "\n")
        self._stream.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.show()
