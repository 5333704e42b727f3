"""`dpserve serve` leaves no process of ours behind: on SIGTERM, and when it is SIGKILLed itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.launcher.procs import kill_all, marked_pids, new_marker, wait_gone
from tests.integration.launcher.serve_process import chat, serve_process
from tests.support import stop_process, wait_http_ok

pytestmark = pytest.mark.timeout(120)

SIM_ARGS = ["--backend", "sim", "--dp-size", "2", "--stagger-s", "0", "--no-echo-replica-logs"]


def test_sigterm_stops_gateway_and_replicas(tmp_path: Path) -> None:
    port = free_port()
    with serve_process(SIM_ARGS, port, tmp_path) as (proc, marker):
        assert chat(port, "hello")[0] == 200
        assert len(marked_pids(marker)) >= 4  # us, the watchdog, two replicas
        os.kill(proc.pid, signal.SIGTERM)  # the parent only: it must stop its children itself
        assert proc.wait(timeout=60) == 0
        assert wait_gone(marker, 10.0) == []


def test_sigkill_of_the_parent_takes_the_replicas_down_too(tmp_path: Path) -> None:
    port = free_port()
    with serve_process(SIM_ARGS, port, tmp_path) as (proc, marker):
        children = [pid for pid in marked_pids(marker) if pid != proc.pid]
        assert len(children) >= 3
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_gone(marker, 20.0) == []


def test_sigterm_during_start_up_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    marker = new_marker()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dpserve", "serve", *SIM_ARGS, "--stagger-s", "30", "--port", str(port),
         "--log-dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, **marker})
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health", 30.0, proc)  # gateway up, r1 not started yet
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert wait_gone(marker, 10.0) == []
    finally:
        stop_process(proc)
        kill_all(marker)
