"""Processes of one experiment run: N `dpserve sim` replicas and one router, on 127.0.0.1 only.

Every process runs in its own process group and is stopped (SIGTERM, then SIGKILL) on exit.
With `kv_events_dir`, each sim publishes KV events (ipc PUB socket there, replay on a free
loopback port); `kv_events_spec(url)` is the `--worker-kv-events` entry for that sim.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

HOST = "127.0.0.1"
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0
# free_port() releases the port before the sim binds it; another process may take it in between.
PORT_ATTEMPTS = 3
_KV_SPECS: dict[str, str] = {}  # sim URL → PUB_ENDPOINT,REPLAY_ENDPOINT


def kv_events_spec(url: str) -> str | None:
    return _KV_SPECS.get(url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll `url` until 200; fail at once if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE_S)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_GRACE_S)


def spawn(argv: Sequence[str], log_path: Path, stack: ExitStack) -> subprocess.Popen[bytes]:
    """Start `argv` in its own process group, logging to `log_path`; `stack` stops it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = stack.enter_context(open(log_path, "wb"))  # noqa: SIM115 - closed by `stack`
    proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(stop, proc)
    return proc


@contextmanager
def sim_fleet(num_replicas: int, sim_args: Sequence[str], log_dir: Path,
              kv_events_dir: Path | None = None) -> Iterator[list[str]]:
    """Start `num_replicas` fresh sims (empty caches) at once; yield their base URLs when all are up."""
    with ExitStack() as stack:
        started = [_spawn_sim(i, sim_args, log_dir, stack, kv_events_dir) for i in range(num_replicas)]
        urls = []
        for i, (url, proc) in enumerate(started):
            for attempt in range(PORT_ATTEMPTS):
                try:
                    wait_ready(url + "/health", proc)
                    break
                except RuntimeError:  # exited: its free port was taken meanwhile (or a real failure)
                    if attempt == PORT_ATTEMPTS - 1:
                        raise
                    url, proc = _spawn_sim(i, sim_args, log_dir, stack, kv_events_dir)
            urls.append(url)
        yield urls


def _spawn_sim(i: int, sim_args: Sequence[str], log_dir: Path, stack: ExitStack,
               kv_events_dir: Path | None) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    argv = [sys.executable, "-m", "dpserve", "sim", "--host", HOST, "--port", str(port), *sim_args]
    url = f"http://{HOST}:{port}"
    if kv_events_dir is not None:
        kv_events_dir.mkdir(parents=True, exist_ok=True)
        pub, replay = f"ipc://{kv_events_dir / f'kv-{port}.pub'}", f"tcp://{HOST}:{free_port()}"
        argv += ["--kv-events-config", json.dumps({"enable_kv_cache_events": True, "endpoint": pub,
                                                   "replay_endpoint": replay})]
        _KV_SPECS[url] = f"{pub},{replay}"
    return url, spawn(argv, log_dir / f"sim{i}.log", stack)


@contextmanager
def router(argv: Sequence[str], url: str, ready_path: str, log_path: Path) -> Iterator[str]:
    """Start a router listening at `url` (its port already in `argv`); yield once it is ready."""
    with ExitStack() as stack:
        proc = spawn(argv, log_path, stack)
        wait_ready(url + ready_path, proc)
        yield url
