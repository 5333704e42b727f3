"""How a replica answers hostile requests, and how long /health waits meanwhile, per source tree.

    python benchmarks/replica_hostile_requests.py --variant before=/tmp/before/src --variant after=src

For each `--variant NAME=SRC_DIR` (a dpserve source tree, put on PYTHONPATH) this starts
`dpserve engine` (the bundled model; `--replica sim` for the simulator), sends each request below
one at a time while a thread probes GET /health every 0.1 s, and prints a table: the status and
time of the answer, the slowest /health probe during it, and whether the replica was still up
after. The requests are the ones issue 13 reported: temperature 1e-40, 100 stop strings of 10 KB
over 600 tokens, a 2 MB and a 10 MB prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from dpserve.config import DEFAULT_HOST

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "temperature 1e-40": ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 8,
                                                    "temperature": 1e-40}),
    "600 tokens, no stop": ("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 600,
                                               "ignore_eos": True, "temperature": 0}),
    "600 tokens, 100 stops x 10 KB": ("/v1/completions", {
        "prompt": "Once upon a time", "max_tokens": 600, "ignore_eos": True, "temperature": 0,
        "stop": ["\u2603" * 10000 + str(i) for i in range(100)]}),
    "2 MB prompt": ("/v1/completions", {"prompt": "hello world " * (2_000_000 // 12), "max_tokens": 4}),
    "10 MB prompt": ("/v1/completions", {"prompt": "hello world " * (10_000_000 // 12), "max_tokens": 4}),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((DEFAULT_HOST, 0))
        return int(sock.getsockname()[1])


def request(port: int, method: str, path: str, body: bytes | None = None,
            timeout_s: float = 600.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(DEFAULT_HOST, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def slowest_probe_s(port: int, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        start = time.monotonic()
        with contextlib.suppress(OSError):
            request(port, "GET", "/health", timeout_s=60)
        out.append(time.monotonic() - start)
        stop.wait(0.1)


def start_replica(kind: str, src: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": src}
    proc = subprocess.Popen([sys.executable, "-m", "dpserve", kind, "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if request(port, "GET", "/health", timeout_s=2)[0] == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} from {src} exited with {proc.returncode}")
        time.sleep(0.2)
    raise TimeoutError(f"{kind} from {src} not ready")


def still_serving(proc: subprocess.Popen[bytes], port: int, wait_s: float = 10.0) -> bool:
    """True if /health answers 200; False once the replica has exited (waits for one or the other)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if request(port, "GET", "/health", timeout_s=2)[0] == 200:
                return True
        time.sleep(0.2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    return False


def run_variant(kind: str, src: str) -> list[tuple[str, str, float, float, bool]]:
    rows = []
    port = free_port()
    proc = start_replica(kind, src, port)
    try:
        for name, (path, body) in REQUESTS.items():
            if rows and not rows[-1][4]:  # the request before took it down: bring it back
                port = free_port()
                proc = start_replica(kind, src, port)
            probes: list[float] = []
            stop = threading.Event()
            prober = threading.Thread(target=slowest_probe_s, args=(port, stop, probes))
            prober.start()
            start = time.monotonic()
            try:
                status, reply = request(port, "POST", path, json.dumps(body).encode())
                answer = str(status) if status != 200 else f"200 {_finish(reply)}"
            except OSError as exc:
                answer = type(exc).__name__
            elapsed = time.monotonic() - start
            time.sleep(0.5)
            stop.set()
            prober.join()
            rows.append((name, answer, elapsed, max(probes, default=0.0), still_serving(proc, port)))
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    return rows


def _finish(reply: bytes) -> str:
    choice = json.loads(reply)["choices"][0]
    text = choice.get("text") or choice.get("message", {}).get("content") or ""
    return f"{choice['finish_reason']}, {len(text)} chars"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=SRC_DIR")
    parser.add_argument("--replica", choices=["engine", "sim"], default="engine")
    args = parser.parse_args()
    print("| tree | request | answer | answer after | slowest /health | replica up after |")
    print("| --- | --- | --- | --- | --- | --- |")
    for variant in args.variant:
        name, src = variant.split("=", 1)
        for request_name, answer, elapsed, probe, alive in run_variant(args.replica, os.path.abspath(src)):
            print(f"| {name} | {request_name} | {answer} | {elapsed:.2f} s | {probe:.2f} s | "
                  f"{'yes' if alive else 'no'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
