"""One logging format for every dpserve component."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


def setup_logging(level: str = "info") -> None:
    """Configure the root logger once for this process (stderr, one line per record)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party access logs are per-request noise at info level.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class ThrottledLog:
    """Warnings that a misbehaving peer can repeat without end (one per message it sends): the first
    of each kind is logged at once, later ones at most once per `every_s`, saying how many were held
    back in between."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, msg: str, *args: object) -> None:
        self._log(logging.WARNING, kind, msg, *args)

    def info(self, kind: str, msg: str, *args: object) -> None:
        self._log(logging.INFO, kind, msg, *args)

    def _log(self, level: int, kind: str, msg: str, *args: object) -> None:
        now = self._clock()
        since = now - self._last.get(kind, -math.inf)
        if since < self._every_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            msg += f" ({held} more like this in the last {since:.0f} s)"
        self._logger.log(level, msg, *args)
