"""Start `python -m dpserve sim` replicas for batch tests and run `dpserve batch` against them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.conftest import free_port
from tests.support import dpserve_process

SIM_MODEL = "smollm2-135m"  # the name sims serve by default; batch bodies must use it
FAST = ("--time-scale", "20")


@contextmanager
def sim_replicas(args_per_replica: Sequence[Sequence[str]], log_dir: Path,
                 command: str = "sim") -> Iterator[list[str]]:
    """One sim (or `command`: engine) per entry, extra flags each; yields their base URLs; all
    stopped at the end."""
    with ExitStack() as stack:
        urls = []
        for i, extra in enumerate(args_per_replica):
            port = free_port()
            fast = FAST if command == "sim" else ()
            stack.enter_context(dpserve_process([command, "--port", str(port), *fast, *extra], port,
                                                timeout_s=300, log_path=log_dir / f"{command}{i}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls


def run_batch(args: Sequence[str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dpserve", "batch", *args], capture_output=True,
                          text=True, timeout=timeout_s, check=False)


def metric(url: str, name: str) -> float:
    """Sum of one Prometheus series from a replica's /metrics."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))
