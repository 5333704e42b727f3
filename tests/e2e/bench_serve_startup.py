"""Measure `dpserve serve`: time until the first replica answers, until all do, and how long a
SIGKILLed replica takes to be back in the gateway. Not a test; numbers go to docs/benchmarks.md.

    .venv/bin/python -m tests.e2e.bench_serve_startup [--backend builtin] [--dp-size 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
import urllib.error
from pathlib import Path

from tests.conftest import free_port
from tests.integration.launcher.serve_process import chat, replica_pids, serve_process, workers


def _healthy_count(port: int) -> int:
    try:
        return sum(1 for w in workers(port) if w.get("healthy", True))
    except (urllib.error.URLError, ConnectionError):
        return 0


def _wait_count(port: int, count: int, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _healthy_count(port) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} workers not healthy after {timeout_s}s")
        time.sleep(0.02)


def one_run(backend: str, dp_size: int) -> tuple[float, float, float, float]:
    """(first ready s, all ready s, first chat s, SIGKILLed replica back s)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        with serve_process(["--backend", backend, "--dp-size", str(dp_size), "--stagger-s", "0",
                            "--no-echo-replica-logs", "--restart-backoff-s", "0.1"],
                           port, Path(tmp), timeout_s=600):
            first = time.monotonic() - t0
            chat(port, "Hello!")
            first_chat = time.monotonic() - t0
            _wait_count(port, dp_size)
            everyone = time.monotonic() - t0
            victim = replica_pids(Path(tmp))["r0"]
            t_kill = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            while replica_pids(Path(tmp))["r0"] == victim or _healthy_count(port) < dp_size:
                time.sleep(0.02)
            back = time.monotonic() - t_kill
    return first, everyone, first_chat, back


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="builtin")
    parser.add_argument("--dp-size", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("run  first_ready_s  all_ready_s  first_chat_s  killed_replica_back_s")
    for i in range(args.runs):
        first, everyone, first_chat, back = one_run(args.backend, args.dp_size)
        print(f"{i + 1:>3}  {first:13.2f}  {everyone:11.2f}  {first_chat:12.2f}  {back:21.2f}")


if __name__ == "__main__":
    main()
