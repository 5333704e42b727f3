"""A real two-node Ray cluster on 127.0.0.1 for the tests, started with `ray start` as a user
would, inside the test namespace only (netns.py); read through Ray's state API.

Small on purpose: the CPUs are logical (4 per node, whatever the machine has), no prestarted
workers, a small object store. The head runs the dashboard process because Ray's state API is
served by it (with --include-dashboard=false Ray 2.60 loads only its usage-stats module), bound to
127.0.0.1 like everything else here. Node loss is detected by the GCS health checks, made 1 s × 3
here (Ray's defaults are several times slower).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CPUS_PER_NODE = 4
_RAY = str(Path(sys.executable).with_name("ray"))
_LEAN = {  # tests: no idle workers started ahead of need (memory); each actor starts its own
    "RAY_enable_worker_prestart": "0",
    "RAY_prestart_worker_first_driver": "0",
}
_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
}


def _node_args(cpus: int) -> list[str]:
    return ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--num-gpus", "0",
            "--object-store-memory", str(80 * 1024 * 1024), "--disable-usage-stats"]


def assert_in_test_namespace() -> None:
    """Never start or `ray stop` a cluster outside the namespace netns.py made: there, `lo` is the
    only interface and the first process is its `sh` (so our PID namespace holds only our
    processes)."""
    assert [name for _, name in socket.if_nameindex()] == ["lo"], socket.if_nameindex()
    assert Path("/proc/1/cmdline").read_bytes().startswith(b"sh\0-c\0ip link set lo up"), \
        "not inside the Ray test namespace"


@dataclass
class RayTestCluster:
    gcs_address: str
    temp_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    cpus_per_node: int = CPUS_PER_NODE

    @classmethod
    def start(cls, cpus_per_node: int = CPUS_PER_NODE, lean: bool = True) -> RayTestCluster:
        """lean: no prestarted workers (tests); False keeps Ray's defaults (benchmarks)."""
        assert_in_test_namespace()
        temp_dir = Path(tempfile.mkdtemp(prefix="dpr-", dir="/tmp"))  # short: Ray's socket paths
        env = {**os.environ, **_ENV, **(_LEAN if lean else {})}
        port = 6379  # the namespace is ours alone: Ray's default ports are free
        _run([_RAY, "start", "--head", "--port", str(port), "--include-dashboard=true",
              "--dashboard-host", "127.0.0.1", "--temp-dir", str(temp_dir), *_node_args(cpus_per_node)], env)
        cluster = cls(f"127.0.0.1:{port}", temp_dir, env, cpus_per_node)
        cluster.add_node()
        return cluster

    def add_node(self) -> None:
        _run([_RAY, "start", "--address", self.gcs_address, *_node_args(self.cpus_per_node)], self.env)
        deadline = time.monotonic() + 60
        while len(self.nodes()) < 2:
            assert time.monotonic() < deadline, "the second node never joined"
            time.sleep(0.2)

    def nodes(self) -> list[Any]:
        from ray.util.state import list_nodes

        return [n for n in list_nodes(address=self.gcs_address) if n.state == "ALIVE"]

    def worker_node_id(self) -> str:
        return next(n.node_id for n in self.nodes() if not n.is_head_node)

    def actors(self, prefix: str) -> list[Any]:
        """Our actors whose name starts with `prefix` and that are not dead."""
        from ray.util.state import list_actors

        return [a for a in list_actors(address=self.gcs_address, limit=10_000)
                if (a.name or "").startswith(prefix) and a.state != "DEAD"]

    def groups(self, prefix: str) -> list[Any]:
        """Placement groups whose name starts with `prefix` and that are not removed."""
        from ray.util.state import list_placement_groups

        return [g for g in list_placement_groups(address=self.gcs_address, limit=10_000, detail=True)
                if (g.name or "").startswith(prefix) and g.state != "REMOVED"]

    def kill_node(self, node_id: str) -> None:
        """The node crashes: SIGKILL its raylet (its workers, agents and object store go with it)."""
        pids = [pid for pid, cmd in _processes() if "raylet" in cmd and f"--node_id={node_id}" in cmd]
        assert pids, f"no raylet for node {node_id}"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    def stop(self) -> list[str]:
        """`ray stop --force` (our PID namespace only), then end whatever else is left; returns the
        Ray processes still running afterwards (none expected)."""
        assert_in_test_namespace()
        subprocess.run([_RAY, "stop", "--force"], env=self.env, capture_output=True, timeout=120, check=False)
        mine = {os.getpid(), 1, *_ancestors()}
        for pid, _ in _processes():
            if pid not in mine:
                _kill(pid)
        time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return [cmd for pid, cmd in _processes() if pid not in mine and "ray" in cmd]


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g}s"
        time.sleep(interval_s)


def replica_processes() -> list[str]:
    """Replica processes (sim or engine) in this namespace, i.e. ours."""
    return [cmd for _, cmd in _processes() if " -m dpserve sim " in cmd or " -m dpserve engine " in cmd]


def _run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _processes() -> list[tuple[int, str]]:
    """(pid, command line) of every live process in this PID namespace."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(") ", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if cmd and state != "Z":
            found.append((int(entry.name), cmd))
    return found


def _ancestors() -> set[int]:
    pids, pid = set(), os.getppid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
