"""Watchdog: a tiny process that kills the replicas' process groups if `dpserve serve` dies.

The parent holds the write end of the watchdog's stdin and tells it `+PGID` / `-PGID` as replica
groups come and go. When stdin reaches EOF — the parent exited, even by SIGKILL — the watchdog
sends SIGTERM to every group still listed, then SIGKILL after a grace period, and exits. This
also catches grandchildren (an engine's own workers), which PR_SET_PDEATHSIG alone would miss.
Run as `python -m dpserve.launcher.watchdog GRACE_S`; it imports nothing heavy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable

from dpserve.aio import wait_for


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_groups(pgids: Iterable[int], grace_s: float, poll_s: float = 0.05) -> None:
    """SIGTERM each group, wait up to grace_s for all to go, then SIGKILL the rest."""
    alive = {pg for pg in pgids if _group_alive(pg)}
    for pg in alive:
        _signal_group(pg, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(poll_s)
        alive = {pg for pg in alive if _group_alive(pg)}
    for pg in alive:
        _signal_group(pg, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def watch(stream: Iterable[str], grace_s: float) -> None:
    """Track `+PGID`/`-PGID` lines until EOF, then kill what is left."""
    groups: set[int] = set()
    for line in stream:
        line = line.strip()
        if len(line) > 1 and line[0] in "+-" and line[1:].isdigit():
            (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
    kill_groups(groups, grace_s)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only EOF on stdin ends the watch
    watch(sys.stdin, float(argv[0]) if argv else 5.0)
    return 0


class Watchdog:
    """Parent side: starts the watchdog process and keeps it informed."""

    def __init__(self, grace_s: float) -> None:
        self._grace_s = grace_s
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dpserve.launcher.watchdog", str(self._grace_s),
            stdin=asyncio.subprocess.PIPE, start_new_session=True)

    def track(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def untrack(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    def _send(self, line: str) -> None:
        if self._proc is not None and self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.write(line.encode())

    async def stop(self) -> None:
        """Close the pipe (the watchdog kills what is still tracked, normally nothing) and reap it."""
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            await wait_for(self._proc.wait(), timeout=self._grace_s + 5.0)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        self._proc = None


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
