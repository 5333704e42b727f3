"""The watchdog kills the process groups it was told about once its pipe closes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dpserve.launcher.watchdog import watch

pytestmark = pytest.mark.timeout(30)


def _sleeper(ignore_term: bool) -> subprocess.Popen[bytes]:
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else ""
    code = f"import signal, time\n{ignore}print('ready', flush=True)\ntime.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_tracked_groups_are_terminated_then_killed_and_untracked_ones_spared() -> None:
    polite, stubborn, spared = _sleeper(False), _sleeper(True), _sleeper(False)
    try:
        watch([f"+{polite.pid}\n", f"+{stubborn.pid}\n", f"+{spared.pid}\n", f"-{spared.pid}\n", "junk\n"],
              grace_s=0.5)
        assert polite.wait(timeout=5) == -15
        assert stubborn.wait(timeout=5) == -9
        assert spared.poll() is None
    finally:
        for proc in (polite, stubborn, spared):
            proc.kill()
            proc.wait()
