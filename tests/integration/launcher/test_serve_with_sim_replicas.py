"""`dpserve serve --backend sim`: both replicas serve, a killed replica is invisible and comes back."""

from __future__ import annotations

import os
import signal
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dpserve.launcher.placement import place_on_cpus
from tests.conftest import free_port
from tests.integration.launcher.serve_process import chat, replica_pids, serve_process, wait_workers

pytestmark = pytest.mark.timeout(180)


def test_twenty_chats_are_served_by_both_replicas(tmp_path: Path) -> None:
    port = free_port()
    args = ["--backend", "sim", "--dp-size", "2", "--stagger-s", "0", "--no-echo-replica-logs",
            "--policy", "round_robin"]
    with serve_process(args, port, tmp_path):
        wait_workers(port, 2)
        results = [chat(port, f"question {i}") for i in range(20)]
    assert all(status == 200 for status, _ in results)
    assert len({worker for _, worker in results}) == 2


def test_killing_a_replica_under_load_fails_no_request_and_it_comes_back(tmp_path: Path) -> None:
    port = free_port()
    args = ["--backend", "sim", "--dp-size", "2", "--stagger-s", "0", "--no-echo-replica-logs",
            "--restart-backoff-s", "0.2", "--policy", "round_robin"]
    with serve_process(args, port, tmp_path):
        wait_workers(port, 2)
        victim = replica_pids(tmp_path)["r0"]
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(_chat_status, port, i) for i in range(200)]
            futures[40].result()
            os.kill(victim, signal.SIGKILL)
            statuses = [f.result() for f in futures]
        assert statuses.count(200) == len(statuses), f"failed: {[s for s in statuses if s != 200]}"
        wait_workers(port, 2)
        assert replica_pids(tmp_path)["r0"] != victim


def _chat_status(port: int, i: int) -> int:
    try:
        return chat(port, f"load {i}", max_tokens=16)[0]
    except urllib.error.HTTPError as exc:
        return exc.code


def _proc_cores(pid: int) -> set[int]:
    return os.sched_getaffinity(pid)


def _proc_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_replicas_run_on_disjoint_cores_with_matching_thread_limits(tmp_path: Path) -> None:
    expected = place_on_cpus(2, sorted(os.sched_getaffinity(0)))
    port = free_port()
    with serve_process(["--backend", "sim", "--dp-size", "2", "--stagger-s", "0", "--no-echo-replica-logs"],
                       port, tmp_path):
        wait_workers(port, 2)
        pids = replica_pids(tmp_path)
        for placement in expected:
            pid = pids[f"r{placement.index}"]
            assert _proc_cores(pid) == set(placement.cpu_cores)
            assert _proc_env(pid)["OMP_NUM_THREADS"] == str(placement.num_threads)
            assert _proc_env(pid)["CUDA_VISIBLE_DEVICES"] == ""
