"""Gateway tail latency and req/s: dpserve (every policy) vs sglang-router vs nginx, same fake replicas.

The set-up of issue 16: 4 fake replicas (`gateway_overhead.serve_replicas`, answering at once),
every gateway pinned to CPU 0 with `taskset`, the replicas and this load generator on CPU 1,
non-streaming chat requests whose prompts are 2 KB and all distinct (so `cache_aware`'s tree
grows and evicts as it would under real traffic), closed loops at concurrency 1, 16 and 64.
Each run starts every gateway afresh; runs alternate targets; the table gives medians of runs.
Then `--rss-prompts` distinct prompts through each cache_aware gateway, and its resident memory.

    python3.11 -m venv /work/venvs/sglang-router
    /work/venvs/sglang-router/bin/pip install sglang-router==0.3.2
    apt-get install nginx-light      # or nginx: the binary is all that is used
    flock /tmp/dpserve-bench.lock .venv/bin/python benchmarks/gateway_tail.py \
        --sglang-python /work/venvs/sglang-router/bin/python --runs 3

Pairs (dpserve policy → the sglang-router 0.3.2 policy compared with it): round_robin,
random and cache_aware → the same name; least_load and power_of_two → power_of_two (its only
load-based policy); consistent_hash → manual (sticky by `x-smg-routing-key`; both are sent
the same 256 session keys). round_robin is also compared with nginx (one worker process,
keep-alive upstreams, round robin).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from gateway_overhead import CHAT, _closed_loop, _free_port, _pct, _start, _stop

SGLANG_POLICY = {"round_robin": "round_robin", "random": "random", "cache_aware": "cache_aware",
                 "least_load": "power_of_two", "power_of_two": "power_of_two", "consistent_hash": "manual"}
POLICIES = tuple(SGLANG_POLICY)
CONCURRENCY = (1, 16, 64)
SESSIONS = 256
GATEWAY_CPU, OTHERS_CPU = "0", "1"


@dataclass(frozen=True)
class Target:
    """One gateway to measure: how to start it and which policy it runs."""

    name: str
    kind: str  # dpserve | sglang | nginx
    policy: str
    cmd: list[str]
    port: int
    env: dict[str, str] | None = None


def _prompt(rng: random.Random) -> str:
    return rng.randbytes(1024).hex()  # 2,048 characters, distinct per request


def _payloads(n: int, seed: int) -> list[tuple[bytes, dict[str, str]]]:
    """n requests with distinct 2 KB prompts; each carries a session key (consistent_hash, manual)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        session = f"s{i % SESSIONS}"
        body = orjson.dumps({"model": "fake", "max_tokens": 16,
                             "messages": [{"role": "user", "content": _prompt(rng)}]})
        out.append((body, {"Content-Type": "application/json", "x-session-id": session,
                           "x-smg-routing-key": session}))
    return out


async def _timed(session: aiohttp.ClientSession, url: str, payload: tuple[bytes, dict[str, str]]) -> float:
    t0 = time.perf_counter()
    async with session.post(url + CHAT, data=payload[0], headers=payload[1]) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}")
    return time.perf_counter() - t0


def _tree(pid: int) -> list[int]:
    """pid and its descendants (nginx serves from a worker child of its master)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process tree so far (from /proc/PID/stat)."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


async def measure(url: str, args: argparse.Namespace, seed: int, pid: int) -> dict[str, float]:
    """p50/p99 latency, req/s and the gateway's CPU µs per request at each concurrency, fresh
    distinct prompts for every point. CPU per request is the gateway's own cost whatever the load
    generator (on the other CPU) can offer: 1e6 / it is what one core of it could serve."""
    counts = {1: args.c1_requests, 16: args.requests, 64: args.requests}
    payloads = _payloads(args.warmup + sum(counts.values()), seed)
    conn = aiohttp.TCPConnector(limit=0)
    out: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=conn) as s:
        feed = iter(payloads)
        await _closed_loop(args.warmup, 8, lambda i: _timed(s, url, next(feed)))
        for c in CONCURRENCY:
            cpu0 = cpu_s(pid)
            wall, lat = await _closed_loop(counts[c], c, lambda i: _timed(s, url, next(feed)))
            out[f"cpu_us_c{c}"] = (cpu_s(pid) - cpu0) / counts[c] * 1e6
            out[f"p50_ms_c{c}"] = statistics.median(lat) * 1e3
            out[f"p99_ms_c{c}"] = _pct(lat, 0.99) * 1e3
            out[f"rps_c{c}"] = counts[c] / wall
    return out


async def fill(url: str, n: int, concurrency: int = 64) -> None:
    """n distinct 2 KB prompts, generated as they go (100k would be 200 MB up front)."""
    rng = random.Random(7)
    conn = aiohttp.TCPConnector(limit=0)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=conn) as s:
        def one(i: int) -> Any:
            body = orjson.dumps({"model": "fake", "max_tokens": 16,
                                 "messages": [{"role": "user", "content": _prompt(rng)}]})
            return _timed(s, url, (body, headers))
        await _closed_loop(n, concurrency, one)


def rss_mb(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a process, MB (from /proc/PID/status)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    kb = {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}
    return {"rss_mb": kb["VmRSS"] / 1024, "hwm_mb": kb["VmHWM"] / 1024}


# ---- targets -------------------------------------------------------------------------------------

def _pinned(cmd: list[str], cpu: str) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") else cmd


def dpserve_target(policy: str, urls: list[str], variant: tuple[str, str] | None = None) -> Target:
    """This tree's gateway, or with `variant` (NAME, SRC) another source tree put on PYTHONPATH."""
    port = _free_port()
    name, env = f"dpserve {policy}", None
    if variant is not None:
        name, env = f"{name} ({variant[0]})", {**os.environ, "PYTHONPATH": variant[1]}
    return Target(name, "dpserve", policy, _pinned(
        [sys.executable, "-m", "dpserve", "router", "--port", str(port), "--policy", policy, "--log-level",
         "warning", "--worker-urls", *urls], GATEWAY_CPU), port, env)


def sglang_target(policy: str, urls: list[str], python: str) -> Target:
    port = _free_port()
    theirs = SGLANG_POLICY[policy]
    return Target(f"sglang-router {theirs}", "sglang", theirs, _pinned(
        [python, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
         "--policy", theirs, "--log-level", "warn", "--worker-urls", *urls], GATEWAY_CPU), port)


NGINX_CONF = """worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream replicas {{
{servers}
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        location /health {{ return 200 '{{}}'; }}
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def nginx_target(urls: list[str], workdir: Path) -> Target:
    port = _free_port()
    servers = "\n".join(f"        server {u.removeprefix('http://')};" for u in urls)
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, servers=servers, port=port))
    return Target("nginx round_robin", "nginx", "round_robin",
                  _pinned(["nginx", "-c", str(conf), "-p", str(workdir)], GATEWAY_CPU), port)


def build_targets(args: argparse.Namespace, urls: list[str], workdir: Path) -> list[Callable[[], Target]]:
    """Factories (each run gets fresh ports): for each policy dpserve, then its sglang pair."""
    out: list[Callable[[], Target]] = []
    sglang_done: set[str] = set()
    variants = [tuple(v.split("=", 1)) for v in args.variant]
    for policy in args.policies:
        out.append(lambda p=policy: dpserve_target(p, urls))  # type: ignore[misc]
        for variant in variants:
            out.append(lambda p=policy, v=variant: dpserve_target(p, urls, v))  # type: ignore[misc]
        theirs = SGLANG_POLICY[policy]
        if args.sglang_python and theirs not in sglang_done:
            sglang_done.add(theirs)
            out.append(lambda p=policy: sglang_target(p, urls, args.sglang_python))  # type: ignore[misc]
    if args.nginx and shutil.which("nginx") and "round_robin" in args.policies:
        out.append(lambda: nginx_target(urls, workdir))
    return out


@contextmanager
def running(target: Target) -> Iterator[subprocess.Popen[bytes]]:
    proc = _start(target.cmd, f"http://127.0.0.1:{target.port}/health", target.env)
    try:
        time.sleep(1.0)  # a router's first health round and load poll happen right after start
        yield proc
    finally:
        _stop(proc)


# ---- report --------------------------------------------------------------------------------------

def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def table(results: dict[str, list[dict[str, float]]]) -> str:
    cols = [f"{m}_c{c}" for c in CONCURRENCY for m in ("p50_ms", "p99_ms", "rps")]
    cols += [f"cpu_us_c{c}" for c in (16, 64)]
    lines = ["| target | " + " | ".join(c.replace("_ms", " ms").replace("_us", " µs").replace("_c", " c=")
                                       for c in cols) + " |",
             "| --- " * (len(cols) + 1) + "|"]
    for name, runs in results.items():
        med = medians(runs)
        lines.append(f"| {name} | " + " | ".join(
            f"{med[c]:,.0f}" if c.startswith(("rps", "cpu")) else f"{med[c]:.2f}" for c in cols) + " |")
    return "\n".join(lines)


def verdicts(results: dict[str, list[dict[str, float]]]) -> list[str]:
    """The goals of issue 16, one line per dpserve policy, from the medians."""
    med = {name: medians(runs) for name, runs in results.items()}
    lines = []
    for name, ours in med.items():
        if not name.startswith("dpserve ") or name.endswith(")"):  # variants are not judged
            continue
        policy = name.removeprefix("dpserve ")
        theirs = med.get(f"sglang-router {SGLANG_POLICY[policy]}")
        if theirs is not None:
            p99 = " ".join(f"c={c}:{ours[f'p99_ms_c{c}']:.2f}/{theirs[f'p99_ms_c{c}']:.2f}"
                           f"{'✓' if ours[f'p99_ms_c{c}'] <= theirs[f'p99_ms_c{c}'] else '✗'}"
                           for c in CONCURRENCY)
            rps = " ".join(f"c={c}:{ours[f'rps_c{c}'] / theirs[f'rps_c{c}']:.2f}×"
                           f"{'✓' if ours[f'rps_c{c}'] >= 1.3 * theirs[f'rps_c{c}'] else '✗'}"
                           for c in (16, 64))
            cap = " ".join(f"c={c}:{theirs[f'cpu_us_c{c}'] / ours[f'cpu_us_c{c}']:.2f}×" for c in (16, 64))
            lines.append(f"{name} vs sglang-router {SGLANG_POLICY[policy]}: p99 ours/theirs {p99}; "
                         f"req/s ratio (goal ≥1.3) {rps}; capacity ratio (their CPU/request over ours) {cap}")
        nginx = med.get("nginx round_robin")
        if policy == "round_robin" and nginx is not None:
            lines.append(f"{name} vs nginx c=16: req/s {ours['rps_c16']:,.0f}/{nginx['rps_c16']:,.0f} "
                         f"{'✓' if ours['rps_c16'] >= nginx['rps_c16'] else '✗'}; p99 "
                         f"{ours['p99_ms_c16']:.2f}/{nginx['p99_ms_c16']:.2f} ms "
                         f"{'✓' if ours['p99_ms_c16'] <= 1.2 * nginx['p99_ms_c16'] else '✗'} (goal ≤1.2×); "
                         f"CPU µs/request {ours['cpu_us_c16']:.0f}/{nginx['cpu_us_c16']:.0f}")
    return lines


# ---- main ----------------------------------------------------------------------------------------

def start_replicas(n: int) -> tuple[subprocess.Popen[bytes], list[str]]:
    ports = [_free_port() for _ in range(n)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    script = str(Path(__file__).with_name("gateway_overhead.py"))
    proc = _start(_pinned([sys.executable, script, "--serve-replicas", *map(str, ports)], OTHERS_CPU),
                  urls[-1] + "/health")
    return proc, urls


def run_all(args: argparse.Namespace, urls: list[str], workdir: Path) -> dict[str, Any]:
    factories = build_targets(args, urls, workdir)
    results: dict[str, list[dict[str, float]]] = {}
    for run in range(args.runs):
        for make in factories:
            target = make()
            with running(target) as proc:
                r = asyncio.run(measure(f"http://127.0.0.1:{target.port}", args, seed=run, pid=proc.pid))
            results.setdefault(target.name, []).append(r)
            print(f"run {run} {target.name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()),
                  flush=True)
    memory: dict[str, dict[str, float]] = {}
    if args.rss_prompts:
        rss_targets = [dpserve_target("cache_aware", urls)]
        if args.sglang_python:
            rss_targets.append(sglang_target("cache_aware", urls, args.sglang_python))
        for target in rss_targets:
            with running(target) as proc:
                before = rss_mb(proc.pid)
                asyncio.run(fill(f"http://127.0.0.1:{target.port}", args.rss_prompts))
                memory[target.name] = {"start_rss_mb": before["rss_mb"], **rss_mb(proc.pid)}
            print(f"{target.name} after {args.rss_prompts:,} prompts: {memory[target.name]}", flush=True)
    return {"runs": results, "memory": memory}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sglang-python", default=None, help="python of a venv with sglang-router 0.3.2")
    ap.add_argument("--no-nginx", dest="nginx", action="store_false", help="skip the nginx target")
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    ap.add_argument("--runs", type=int, default=3, help="runs per target (the table gives medians)")
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--c1-requests", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=8000, help="requests per point at c=16 and c=64")
    ap.add_argument("--rss-prompts", type=int, default=100_000,
                    help="distinct prompts through each cache_aware gateway, then its RSS (0 = skip)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=SRC",
                    help="also run dpserve from another source tree (on PYTHONPATH), e.g. before=/tmp/src")
    ap.add_argument("--output-json", default=None)
    args = ap.parse_args()
    from dpserve.http_server import install_uvloop

    install_uvloop()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {int(OTHERS_CPU)})  # the load generator stays off the gateway's CPU
    replicas, urls = start_replicas(args.replicas)
    try:
        with tempfile.TemporaryDirectory(prefix="gateway-tail-") as tmp:
            report = run_all(args, urls, Path(tmp))
    finally:
        _stop(replicas)
    print(table(report["runs"]))
    print("\n".join(verdicts(report["runs"])))
    for name, mem in report["memory"].items():
        print(f"{name}: RSS {mem['rss_mb']:.0f} MB (peak {mem['hwm_mb']:.0f} MB) after {args.rss_prompts:,} "
              f"distinct 2 KB prompts; {mem['start_rss_mb']:.0f} MB at start")
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
