"""Measure `dpserve serve --ray` against `dpserve serve` (local), side by side in one run: time to
the first replica ready and to all ready, and the gateway's req/s in front of 8 sims. Not a test;
numbers go to docs/benchmarks.md. Re-runs itself inside a loopback-only namespace (netns.py),
where it starts its own two-node Ray cluster (tests/ray/cluster.py):

    flock /tmp/dpserve-bench.lock .venv/bin/python -m tests.ray.bench_serve_on_ray [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

from tests.conftest import free_port
from tests.integration.launcher.serve_process import workers
from tests.ray.cluster import RayTestCluster
from tests.ray.netns import inside_namespace, namespace_argv, namespace_env
from tests.support import stop_process

_SIM_FAST = "--time-scale 100"  # a sim step in 1/100 of the 8B/H100 time: the gateway is what is loaded


def _healthy(port: int) -> int:
    try:
        return sum(1 for w in workers(port) if w.get("healthy"))
    except (urllib.error.URLError, ConnectionError, OSError):
        return 0


def start_times(args: list[str], dp_size: int, ray_address: str | None) -> tuple[float, float, int, Path]:
    """Start serve; (s to first ready, s to all ready, gateway port, log dir). Caller stops it."""
    port, tmp = free_port(), Path(tempfile.mkdtemp(prefix="dpserve-bench-"))
    _dirs.append(tmp)
    ray = ["--ray", "--ray-address", ray_address] if ray_address else []
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "dpserve", "serve", *ray, "--port", str(port),
                             "--dp-size", str(dp_size), "--stagger-s", "0", "--no-echo-replica-logs",
                             "--log-dir", str(tmp / "logs"), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = None
    while _healthy(port) < dp_size:
        if first is None and _healthy(port) >= 1:
            first = time.monotonic() - t0
        assert proc.poll() is None and time.monotonic() - t0 < 600, "serve did not come up"
        time.sleep(0.02)
    everyone = time.monotonic() - t0
    _running[port] = proc
    return first if first is not None else everyone, everyone, port, tmp


_running: dict[int, subprocess.Popen[bytes]] = {}
_dirs: list[Path] = []


def stop(port: int) -> None:
    proc = _running.pop(port)
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    finally:
        stop_process(proc)


def req_per_s(port: int, num_prompts: int) -> float:
    _dirs.append(Path(tempfile.mkdtemp(prefix="dpserve-bench-")))
    out = _dirs[-1] / "bench.json"
    subprocess.run([sys.executable, "-m", "dpserve", "bench", "--url", f"http://127.0.0.1:{port}",
                    "--workload", "random", "--num-prompts", str(num_prompts), "--concurrency", "64",
                    "--input-len", "32", "--output-len", "8", "--ignore-eos", "--no-stream",
                    "--warmup", "64", "--output-json", str(out)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    report = json.loads(out.read_text())
    assert report["failed"] == 0, report
    return float(report["request_throughput"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--num-prompts", type=int, default=3000)
    args = parser.parse_args()
    if not inside_namespace():
        argv = namespace_argv([sys.executable, "-m", "tests.ray.bench_serve_on_ray", *sys.argv[1:]])
        os.execvpe(argv[0], argv, namespace_env())
    cluster = RayTestCluster.start(cpus_per_node=8, lean=False)  # Ray's defaults: workers prestarted
    cases = {"sim ×8": (["--backend", "sim", "--engine-args", _SIM_FAST], 8),
             "builtin ×2": (["--backend", "builtin"], 2)}
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    try:
        for run in range(args.runs):
            for name, (serve_args, dp) in cases.items():
                for where in ("local", "ray"):
                    address = cluster.gcs_address if where == "ray" else None
                    first, everyone, port, _ = start_times(serve_args, dp, address)
                    if name.startswith("sim"):
                        rates[where].append(req_per_s(port, args.num_prompts))
                    stop(port)
                    rows.setdefault((name, where), []).append((first, everyone))
                    rate = f"  {rates[where][-1]:7.0f} req/s" if name.startswith("sim") else ""
                    print(f"run {run + 1} {name:10} {where:5} first {first:6.2f}s all {everyone:6.2f}s{rate}",
                          flush=True)
    finally:
        for port in list(_running):
            stop(port)
        left = cluster.stop()
        for tmp in _dirs:
            shutil.rmtree(tmp, ignore_errors=True)
        assert left == [], left
    print("\n| replicas | placed | first ready s (median) | all ready s (median) | runs |")
    print("| --- | --- | ---: | ---: | ---: |")
    for (name, where), times in rows.items():
        print(f"| {name} | {where} | {statistics.median(t[0] for t in times):.2f} | "
              f"{statistics.median(t[1] for t in times):.2f} | {len(times)} |")
    for where, values in rates.items():
        print(f"gateway req/s, 8 sims placed {where}: median {statistics.median(values):.0f} "
              f"(runs: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
