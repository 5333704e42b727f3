"""Find a test's processes by an environment marker (children inherit it), by scanning /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

MARKER_ENV = "DPSERVE_TEST_MARKER"


def new_marker() -> dict[str, str]:
    """Environment that tags `dpserve serve` and everything it starts."""
    return {MARKER_ENV: uuid.uuid4().hex}


def marked_pids(env: dict[str, str]) -> list[int]:
    """Live (non-zombie) processes of ours whose environment carries the marker."""
    needle = f"{MARKER_ENV}={env[MARKER_ENV]}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(") ", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            pids.append(int(entry.name))
    return pids


def wait_gone(env: dict[str, str], timeout_s: float) -> list[int]:
    """Poll until no marked process is left; returns the survivors (empty on success)."""
    deadline = time.monotonic() + timeout_s
    left = marked_pids(env)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = marked_pids(env)
    return left


def kill_all(env: dict[str, str]) -> None:
    """Cleanup after a failed test: SIGKILL whatever is still marked."""
    for pid in marked_pids(env):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
