"""`dpserve serve` leaves no process of ours behind: on SIGTERM, and when it is SIGKILLed itself."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.launcher.procs import marked_pids, wait_gone
from tests.integration.launcher.serve_process import chat, serve_process

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
