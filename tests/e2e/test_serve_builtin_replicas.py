"""`dpserve serve` with 2 built-in replicas of the bundled model on the CPU (slow: loads the model)."""

from __future__ import annotations

import os
import signal
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.launcher.procs import wait_gone
from tests.integration.launcher.serve_process import chat, replica_pids, serve_process, wait_workers

pytestmark = [pytest.mark.slow, pytest.mark.model, pytest.mark.timeout(420)]

BUILTIN_ARGS = ["--dp-size", "2", "--stagger-s", "0", "--no-echo-replica-logs", "--policy", "round_robin",
                "--restart-backoff-s", "0.2", "--engine-args", "--kv-cache-tokens 4096 --max-num-seqs 8"]


def _status(port: int, i: int) -> int:
    try:
        return chat(port, f"Count to {i % 7 + 2}.", max_tokens=8)[0]
    except urllib.error.HTTPError as exc:
        return exc.code


def test_two_builtin_replicas_serve_twenty_chats_and_survive_a_killed_replica(
        tmp_path: Path, bundled_model_dir: Path) -> None:
    port = free_port()
    with serve_process(BUILTIN_ARGS, port, tmp_path, timeout_s=240) as (proc, marker):
        wait_workers(port, 2, timeout_s=240)
        results = [chat(port, f"Say hello number {i}.") for i in range(20)]
        assert [status for status, _ in results] == [200] * 20
        assert len({worker for _, worker in results}) == 2, results

        victim = replica_pids(tmp_path)["r1"]
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(_status, port, i) for i in range(40)]
            futures[5].result()
            os.kill(victim, signal.SIGKILL)
            statuses = [f.result() for f in futures]
        assert statuses == [200] * len(statuses), statuses
        wait_workers(port, 2, timeout_s=240)
        assert replica_pids(tmp_path)["r1"] != victim

        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert wait_gone(marker, 15.0) == []
