"""Migration gap: what a streaming client sees when the replica serving it is SIGKILLed (issue 14).

N streams run through a `dpserve router` (round robin over R replicas); once every stream has its
first chunks, replica 0 is SIGKILLed. For each stream it was serving, the gap is the time between
the last chunk before the kill and the first chunk after it, as the client saw them (detection,
a new connection, the prefill of prompt + tokens so far on another replica, the first new token).
The streams' ordinary inter-chunk gaps (before the kill) are reported beside it. The killed
replica is restarted on the same port for the next round.

    .venv/bin/python benchmarks/migration_gap.py --backend sim --rounds 5
    .venv/bin/python benchmarks/migration_gap.py --backend engine --replicas 3 --streams 6 --rounds 5 \\
        --max-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import aiohttp
import orjson
from gateway_overhead import _free_port, _stop  # this directory is on sys.path when run as a script

from dpserve.http_names import CHAT_PATH, HEALTH_PATH, WORKER_HEADER, WORKERS_PATH


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "dpserve", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


async def _wait_ok(session: aiohttp.ClientSession, url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(url)


def _replica_args(args: argparse.Namespace, port: int) -> list[str]:
    if args.backend == "sim":
        return ["sim", "--port", str(port), "--time-scale", str(args.time_scale), "--log-level", "warning"]
    return ["engine", "--port", str(port), "--num-threads", "1", "--kv-cache-tokens", "8192",
            "--log-level", "warning"]


async def _stream(session: aiohttp.ClientSession, url: str, i: int, args: argparse.Namespace,
                  progress: list[int]) -> dict[str, Any]:
    """One stream; `progress[i]` counts its content chunks as they arrive."""
    messages = [{"role": "user", "content": f"Tell story number {i} at length."}]
    body = {"model": "smollm2-135m", "stream": True, "max_tokens": args.max_tokens, "temperature": 0,
            "ignore_eos": True, "messages": messages}
    arrivals: list[float] = []
    error = False
    async with session.post(url + CHAT_PATH, json=body) as resp:
        worker = resp.headers.get(WORKER_HEADER)
        async for line in resp.content:
            if line.startswith(b"data: {"):
                event = orjson.loads(line[6:])
                error |= "error" in event
                if any((c.get("delta") or {}).get("content") for c in event.get("choices", [])):
                    arrivals.append(time.monotonic())
                    progress[i] = len(arrivals)
    return {"worker": worker, "arrivals": arrivals, "error": error}


async def one_round(args: argparse.Namespace, gw: str,
                    victim: subprocess.Popen[bytes]) -> tuple[list[float], list[float], int]:
    """(gaps of the streams moved off the victim, ordinary inter-chunk gaps, client errors)."""
    progress = [0] * args.streams
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        tasks = [asyncio.create_task(_stream(session, gw, i, args, progress)) for i in range(args.streams)]
        while min(progress) < args.kill_after_chunks and not all(t.done() for t in tasks):
            await asyncio.sleep(0.01)
        killed_at = time.monotonic()
        os.killpg(victim.pid, signal.SIGKILL)
        results = await asyncio.gather(*tasks)
    gaps, itl, errors = [], [], 0
    for r in results:
        errors += r["error"]
        before = [t for t in r["arrivals"] if t < killed_at]
        after = [t for t in r["arrivals"] if t >= killed_at]
        itl += [b - a for a, b in itertools.pairwise(before)]
        if r["worker"] == "w0" and before and after:
            gaps.append(after[0] - before[-1])
    return gaps, itl, errors


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main_async(args: argparse.Namespace) -> None:
    ports = [_free_port() for _ in range(args.replicas)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs = [_spawn(_replica_args(args, p)) for p in ports]
    gw_port = _free_port()
    gw_url = f"http://127.0.0.1:{gw_port}"
    router = None
    all_gaps: list[float] = []
    all_itl: list[float] = []
    errors = 0
    try:
        async with aiohttp.ClientSession() as session:
            for url in urls:
                await _wait_ok(session, url + HEALTH_PATH)
            router = _spawn(["router", "--port", str(gw_port), "--policy", "round_robin",
                             "--log-level", "warning", "--worker-urls", *urls])
            await _wait_ok(session, gw_url + "/readiness")
        for n in range(args.rounds):
            gaps, itl, errs = await one_round(args, gw_url, procs[0])
            all_gaps += gaps
            all_itl += itl
            errors += errs
            print(f"round {n}: {len(gaps)} streams moved, gap p50 {statistics.median(gaps or [0]) * 1e3:.0f} "
                  f"ms, max {max(gaps or [0]) * 1e3:.0f} ms; client errors {errs}", flush=True)
            procs[0].wait()
            procs[0] = _spawn(_replica_args(args, ports[0]))
            async with aiohttp.ClientSession() as session:
                await _wait_ok(session, urls[0] + HEALTH_PATH)
                await _until_routable(session, gw_url, "w0")
    finally:
        for p in [*procs, *([router] if router else [])]:
            _stop(p)
    print("| backend | streams moved | gap p50 ms | gap p99 ms | ordinary inter-chunk p50 ms "
          "| client errors |\n| --- | --- | --- | --- | --- | --- |\n"
          f"| {args.backend} ×{args.replicas} | {len(all_gaps)} | {statistics.median(all_gaps) * 1e3:.0f} | "
          f"{_pct(all_gaps, 0.99) * 1e3:.0f} | {statistics.median(all_itl) * 1e3:.1f} | {errors} |")


async def _until_routable(session: aiohttp.ClientSession, gw: str, worker_id: str) -> None:
    """Until the restarted replica is healthy and its circuit closed again: the streams cut on it
    opened its breaker, and only successful trial requests close it."""
    trial = {"model": "smollm2-135m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    while True:
        async with session.get(gw + WORKERS_PATH) as resp:
            if any(w["id"] == worker_id and w["healthy"] and w["circuit_state"] == "closed"
                   for w in await resp.json()):
                return
        async with session.post(gw + CHAT_PATH, json=trial) as resp:
            await resp.read()
        await asyncio.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("sim", "engine"), default="sim")
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--streams", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--kill-after-chunks", type=int, default=16, help="kill once every stream has this many")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--time-scale", type=float, default=1.0, help="sim only")
    args = ap.parse_args()
    from dpserve.http_server import install_uvloop

    install_uvloop()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
