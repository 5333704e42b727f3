"""`dpserve serve` leaves no process of ours behind: on SIGTERM, and when it is SIGKILLed itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.launcher.procs import kill_all, marked_pids, new_marker, wait_gone
from tests.integration.launcher.serve_process import chat, serve_process, workers
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


def test_a_second_sigterm_skips_the_drain(tmp_path: Path) -> None:
    port = free_port()
    args = [*SIM_ARGS, "--shutdown-grace-s", "120", "--engine-args", "--slow-first-byte-s 120"]
    with serve_process(args, port, tmp_path) as (proc, marker), ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(_chat_status, port)
        _wait_in_flight(port)
        os.kill(proc.pid, signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)  # draining the stuck request
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert wait_gone(marker, 10.0) == []
        assert stuck.result(timeout=30) != 200


def _chat_status(port: int) -> int:
    try:
        return chat(port, "never answered")[0]
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return getattr(exc, "code", -1)


def _wait_in_flight(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(int(str(w.get("in_flight", 0))) for w in workers(port)):
        assert time.monotonic() < deadline, "the request never reached a replica"
        time.sleep(0.05)
