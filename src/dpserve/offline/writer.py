"""Appending results to OUT: whole lines, flushed at once, fsynced periodically; optional ordering.

Each line goes out in one write(2) on an O_APPEND descriptor, so a killed process leaves either
the whole line or none of it; only a power loss can tear the tail, which --resume drops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson


class ResultFile:
    """OUT opened for appending."""

    def __init__(self, path: Path, fsync_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._fsync_interval_s = fsync_interval_s
        self._clock = clock
        self._last_sync = clock()
        self.lines_written = 0

    def write(self, obj: dict[str, Any]) -> None:
        data = memoryview(orjson.dumps(obj) + b"\n")
        while data:  # regular files take it all in one call; loop for the pathological case
            data = data[os.write(self._fd, data):]
        self.lines_written += 1
        if self._clock() - self._last_sync >= self._fsync_interval_s:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._fd)
        self._last_sync = self._clock()

    def close(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1


class ResultSink(Protocol):
    def submit(self, seq: int, obj: dict[str, Any]) -> None:
        """Hand over the result for input line `seq`; it is written now or when its turn comes."""
        ...

    def admits(self, seq: int) -> bool:
        """Whether the request for line `seq` may start now (bounds the results held back)."""
        ...


class UnorderedWriter:
    """Writes each result as soon as it arrives."""

    def __init__(self, out: ResultFile) -> None:
        self._out = out

    def submit(self, seq: int, obj: dict[str, Any]) -> None:
        self._out.write(obj)

    def admits(self, seq: int) -> bool:
        return True


class OrderedWriter:
    """Writes results in the order of `order` (line numbers), holding at most `window` back.

    A request may start only while its position is within `window` of the next line to write,
    so at most `window` results wait in memory however slow the oldest one is.
    """

    def __init__(self, out: ResultFile, order: Iterable[int], window: int) -> None:
        self._out = out
        self._order = list(order)
        self._position = {seq: i for i, seq in enumerate(self._order)}
        self._window = window
        self._next = 0  # position in _order of the next line to write
        self._held: dict[int, dict[str, Any]] = {}

    def submit(self, seq: int, obj: dict[str, Any]) -> None:
        self._held[seq] = obj
        while self._next < len(self._order) and self._order[self._next] in self._held:
            self._out.write(self._held.pop(self._order[self._next]))
            self._next += 1

    def admits(self, seq: int) -> bool:
        return self._position[seq] < self._next + self._window

    @property
    def num_held(self) -> int:
        return len(self._held)
