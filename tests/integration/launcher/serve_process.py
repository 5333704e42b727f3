"""Start `dpserve serve` as a test subprocess and wait until its gateway has a ready replica."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dpserve.http_names import WORKER_HEADER
from tests.integration.launcher.procs import kill_all, new_marker
from tests.support import stop_process, wait_http_ok


@contextmanager
def serve_process(args: Sequence[str], port: int, tmp_path: Path,
                  timeout_s: float = 60.0) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    """`python -m dpserve serve --port PORT --log-dir TMP/logs ARGS`, marked for /proc scans.

    Yields (process, marker env) once /readiness answers 200; always cleans up everything marked.
    """
    marker = new_marker()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "dpserve", "serve", "--port", str(port), "--log-dir", str(tmp_path / "logs"),
         *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **marker})
    try:
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/readiness", timeout_s, proc)
        except (RuntimeError, TimeoutError) as exc:
            log_text = (tmp_path / "serve.log").read_text()[-4000:]
            raise AssertionError(f"{exc}; serve log:\n{log_text}") from exc
        yield proc, marker
    finally:
        stop_process(proc)
        kill_all(marker)
        log.close()


def chat(port: int, content: str, max_tokens: int = 8) -> tuple[int, str]:
    """One non-streaming chat request through the gateway: (status, x-dpserve-worker)."""
    body = json.dumps({"model": "smollm2-135m", "messages": [{"role": "user", "content": content}],
                       "max_tokens": max_tokens}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
        return resp.status, resp.headers.get(WORKER_HEADER, "")


def gateway_metric(port: int, name: str) -> float:
    """One unlabelled sample of the gateway's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def workers(port: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/workers", timeout=5) as resp:
        data = json.loads(resp.read())
    return list(data["workers"] if isinstance(data, dict) else data)


def replica_pids(tmp_path: Path) -> dict[str, int]:
    """Replica id → current pid, from the launcher's per-replica pid notes in the serve log dir."""
    pids = {}
    for log in sorted((tmp_path / "logs").glob("r*.log")):
        starts = re.findall(r"^--- dpserve serve: started pid (\d+):", log.read_text(), re.MULTILINE)
        pids[log.stem] = int(starts[-1])
    return pids


def wait_workers(port: int, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        healthy = [w for w in workers(port) if w.get("healthy", True)]
        if len(healthy) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} healthy workers after {timeout_s}s: {workers(port)}")
