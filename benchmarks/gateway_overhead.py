"""Gateway overhead: dpserve router vs the SGLang Model Gateway vs going direct, same fake replicas.

Measures, in one run: added median/p99 latency at concurrency 1, requests/s at concurrency 16
and 64 (non-streaming), and for streams the relayed SSE chunks/s at concurrency 16 and the time
to first chunk. Fake replicas answer at once (no model), so what is measured is the proxy.

    .venv/bin/python benchmarks/gateway_overhead.py --sglang-python /tmp/sglvenv/bin/python

The replicas run in one child process, each gateway in its own; the load generator is this
process (aiohttp on uvloop). On a small shared machine all of them compete for the same cores.

The steadier measure of the gateway's own cost: `--cpu-runs N` runs only the dpserve gateway
under a c=64 closed loop and reports its CPU µs per request from /proc, alternating between
source trees given as `--variant NAME=SRC_DIR` (each put on PYTHONPATH):

    .venv/bin/python benchmarks/gateway_overhead.py --cpu-runs 6 --variant before=/tmp/a --variant after=src

The cost of a watched dashboard: `--dashboard-runs N` runs one gateway (this tree; replicas answer
/metrics with real vLLM-named text, so the dashboard's sampler parses what it would in production)
under the same c=64 loop, N rounds of three states in rotating order: nobody watching, the page's
own requests (`GET /dashboard/data?since=SEQ` just after each sample, as dashboard.js does), and
the page open in Debian's headless Chromium (which also competes for this machine's CPUs):

    flock /tmp/dpserve-bench.lock .venv/bin/python benchmarks/gateway_overhead.py --dashboard-runs 6 \
        --replicas 3 --idle-seconds 20

The cost of stream migration being armed (issue 14): `--migration-runs N` runs the dpserve
gateway with migration on (the default) and with `--no-stream-migration` side by side, and
measures them in alternation: time to first chunk at c=1 (`--c1-requests` pairs, A then B), then
N rounds of streamed chunks/s at c=16 with the gateway's CPU µs per chunk, and CPU µs per
non-streaming request at c=64. The fake replicas answer `return_token_ids` as vLLM does (prompt
ids in the first chunk, `token_ids` in every chunk), so the armed gateway pays for stripping them:

    flock /tmp/dpserve-bench.lock .venv/bin/python benchmarks/gateway_overhead.py --migration-runs 6 \
        --c1-requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

CHAT = "/v1/chat/completions"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- fake replicas (child process) ---------------------------------------------------------------

def serve_replicas(ports: list[int], chunks: int, vllm_metrics: bool = False) -> None:
    from aiohttp import web

    from dpserve.http_server import bind_socket, install_uvloop
    from dpserve.serving.engine_client import EngineStats
    from dpserve.serving.metrics import ReplicaMetrics

    metrics = ReplicaMetrics("fake")
    for i in range(1000):  # histograms with data in most buckets, as a busy replica has
        metrics.record_first_token(0.001 * (i % 300))
        metrics.record_inter_token(0.02, 1)
        metrics.record_finished(num_prompt_tokens=50, num_generated_tokens=20, finish_reason="stop",
                                e2e_s=0.5)
    metrics_text = metrics.render(EngineStats(3, 1, 0.25, 1000, 400)).encode()

    # A non-streamed answer of 16 tokens (the payload's max_tokens); a stream of up to `chunks`.
    body = orjson.dumps({"id": "x", "object": "chat.completion", "model": "fake", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "tok" * 16}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 16, "total_tokens": 56}})
    def sse(obj: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\n\n"
    env = {"id": "x", "object": "chat.completion.chunk"}
    role = sse({**env, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    role_ids = sse({**env, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
                    "prompt_token_ids": list(range(1000, 1040))})
    event = sse({**env, "choices": [{"index": 0, "delta": {"content": "tok"}}]})
    event_ids = sse({**env, "choices": [{"index": 0, "delta": {"content": "tok"}, "token_ids": [4242]}]})
    last = sse({**env, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    models = orjson.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def completion(request: web.Request) -> web.StreamResponse:
        req = orjson.loads(await request.read())
        if not req.get("stream"):
            return web.Response(body=body, content_type="application/json")
        ids = req.get("return_token_ids") is True
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(role_ids if ids else role)
        for _ in range(min(chunks, req.get("max_tokens") or chunks) - 1):
            await resp.write(event_ids if ids else event)
        await resp.write(last)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=b"{}", content_type="application/json")

    async def replica_metrics(request: web.Request) -> web.Response:
        return web.Response(body=metrics_text, content_type="text/plain")

    async def model_list(request: web.Request) -> web.Response:
        return web.Response(body=models, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post(CHAT, completion)
        app.router.add_post("/v1/completions", completion)
        for path in ("/health", "/health_generate", "/get_server_info", "/get_model_info",
                     "/get_load"):  # /get_load: sglang-router power_of_two polls it
            app.router.add_get(path, ok)
        app.router.add_get("/metrics", replica_metrics if vllm_metrics else ok)
        app.router.add_get("/v1/models", model_list)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for port in ports:
            await web.SockSite(runner, bind_socket("127.0.0.1", port)).start()
        await asyncio.Event().wait()

    install_uvloop()
    asyncio.run(main())


# ---- load generation -----------------------------------------------------------------------------

def _payload(i: int, stream: bool) -> bytes:
    prefix = f"You are assistant number {i % 8}. " * 8  # 8 shared prefixes: cache_aware has work to do
    return orjson.dumps({"model": "fake", "stream": stream, "max_tokens": None if stream else 16,
                         "messages": [{"role": "user", "content": f"{prefix}question {i}"}]})


async def _one(session: aiohttp.ClientSession, url: str, i: int) -> float:
    t0 = time.perf_counter()
    async with session.post(url + CHAT, data=_payload(i, False),
                            headers={"Content-Type": "application/json"}) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}")
    return time.perf_counter() - t0


async def _one_stream(session: aiohttp.ClientSession, url: str, i: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    first: float | None = None
    events = 0
    async with session.post(url + CHAT, data=_payload(i, True),
                            headers={"Content-Type": "application/json"}) as resp:
        async for chunk in resp.content.iter_any():
            if first is None:
                first = time.perf_counter() - t0
            events += chunk.count(b"data: ")
    return (first or 0.0), events


async def _closed_loop(n: int, concurrency: int,
                       job: Callable[[int], Awaitable[Any]]) -> tuple[float, list[Any]]:
    it = iter(range(n))
    results: list[Any] = []

    async def worker() -> None:
        for i in it:
            results.append(await job(i))
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, results


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url: str, args: argparse.Namespace, pid: int) -> dict[str, float]:
    """`pid`: the process whose CPU per request is reported (the gateway, or the replica if direct)."""
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as s:
        await _closed_loop(300, 8, lambda i: _one(s, url, i))  # warm-up: pools, caches, JITs
        _, lat = await _closed_loop(args.c1_requests, 1, lambda i: _one(s, url, i))
        out = {"p50_ms": statistics.median(lat) * 1e3, "p99_ms": _pct(lat, 0.99) * 1e3}
        for c in (16, 64):
            cpu0 = _cpu_s(pid)
            wall, _ = await _closed_loop(args.requests, c, lambda i: _one(s, url, i))
            out[f"rps_c{c}"] = args.requests / wall
            out[f"cpu_us_per_req_c{c}"] = (_cpu_s(pid) - cpu0) / args.requests * 1e6
        _, c1 = await _closed_loop(args.c1_requests // 4, 1, lambda i: _one_stream(s, url, i))
        out["ttfc_p50_ms"] = statistics.median(t for t, _ in c1) * 1e3
        out["ttfc_p99_ms"] = _pct([t for t, _ in c1], 0.99) * 1e3
        wall, streams = await _closed_loop(args.streams, 16, lambda i: _one_stream(s, url, i))
        out["chunks_per_s_c16"] = sum(e for _, e in streams) / wall
    return out


async def gateway_cpu(url: str, pid: int, seconds: float, concurrency: int = 64,
                      watcher: str = "") -> dict[str, float]:
    """The gateway alone under a closed loop for `seconds`: CPU µs per request (user, system),
    req/s and the latency p50/p99 the load generator saw.

    `watcher` "page-requests": the dashboard page's polling runs beside the loop (see dashboard.js).
    """
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as s:
        await _closed_loop(1000, concurrency, lambda i: _one(s, url, i))  # warm-up: pools, caches
        # The watcher has its own session, as a browser has its own connection.
        page = aiohttp.ClientSession() if watcher == "page-requests" else None
        polls = asyncio.create_task(_poll_like_the_page(page, url)) if page is not None else None
        stop_at = time.perf_counter() + seconds
        latencies: list[float] = []

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                latencies.append(await _one(s, url, len(latencies)))
        user0, sys0 = _cpu_split_s(pid)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        user1, sys1 = _cpu_split_s(pid)
        if polls is not None and page is not None:
            polls.cancel()
            await page.close()
    done = len(latencies)
    return {"cpu_us": (user1 + sys1 - user0 - sys0) / done * 1e6, "user_us": (user1 - user0) / done * 1e6,
            "rps": done / wall, "p50_ms": statistics.median(latencies) * 1e3,
            "p99_ms": _pct(latencies, 0.99) * 1e3}


async def _poll_like_the_page(s: aiohttp.ClientSession, url: str) -> None:
    """What dashboard.js does: GET /dashboard/data?since=SEQ just after each sample."""
    seq = 0
    while True:
        async with s.get(f"{url}/dashboard/data?since={seq}") as resp:
            doc = orjson.loads(await resp.read())
        seq = doc["seq"]
        await asyncio.sleep(min(1.0, max(0.1, doc["next_sample_in_s"] + 0.06)))


def run_dashboard_comparison(args: argparse.Namespace, urls: list[str]) -> None:
    """`--dashboard-runs N`: one gateway; nobody watching vs the page's requests vs Chromium, N rounds.

    Each state is measured twice: req/s and CPU per request under the c=64 loop (noisy on a shared
    machine), and the gateway's CPU per second with no load for `--idle-seconds` (what watching
    costs by itself; at saturation the gateway's one event loop loses that share of a core).
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start([sys.executable, "-m", "dpserve", "router", "--port", str(port), "--policy", args.policy,
                   "--log-level", "warning", "--worker-urls", *urls], url + "/health")
    states = ["closed", "page-requests", "chromium"]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in states}
    try:
        for run in range(args.dashboard_runs):
            for name in states[run % 3:] + states[:run % 3]:  # rotate: no state always goes first
                r = _dashboard_state(url, proc.pid, name, args)
                results[name].append(r)
                print(f"run {run} {name}: {r['rps']:.0f} req/s, {r['cpu_us']:.1f} µs/req, idle "
                      f"{r['idle_cpu_ms_per_s']:.2f} ms CPU/s", flush=True)
    finally:
        _stop(proc)
    idle_base = statistics.median(r["idle_cpu_ms_per_s"] for r in results["closed"])
    print("| dashboard | req/s median (range) | req/s vs closed, same round: median (quartiles) | "
          "cpu µs/req median | idle CPU ms/s median (range) | extra vs closed |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, rs in results.items():
        rps = sorted(r["rps"] for r in rs)
        # Each round's states ran back to back: their ratio cancels the machine's slow drifts.
        ratios = sorted(r["rps"] / c["rps"] - 1 for r, c in zip(rs, results["closed"], strict=True))
        q1, q2, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        cpu_us = statistics.median(r["cpu_us"] for r in rs)
        line = (f"| {name} | {statistics.median(rps):,.0f} ({rps[0]:,.0f}–{rps[-1]:,.0f}) | "
                f"{q2 * 100:+.1f}% ({q1 * 100:+.1f}% … {q3 * 100:+.1f}%) | {cpu_us:.1f} | ")
        if args.idle_seconds > 0:
            idle = sorted(r["idle_cpu_ms_per_s"] for r in rs)
            extra = statistics.median(idle) - idle_base
            line += (f"{statistics.median(idle):.2f} ({idle[0]:.2f}–{idle[-1]:.2f}) | "
                     f"{extra:+.2f} ms/s ({extra / 10:+.2f}% of a core) |")
        else:
            line += "– | – |"
        print(line)


def _dashboard_state(url: str, pid: int, name: str, args: argparse.Namespace) -> dict[str, float]:
    import tempfile

    browser = None
    if name == "chromium":
        profile = tempfile.mkdtemp(prefix="dpserve-bench-chromium-")
        # Niced: on this machine the browser shares the cores of the gateway and the load; its
        # drawing (six charts a second) would otherwise take them from both, which a browser on an
        # operator's own machine does not. Its requests to the gateway are unchanged.
        browser = subprocess.Popen(
            ["nice", "-n", "19", "/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
             url + "/dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(3.0)  # the page loaded and polling
    try:
        r = asyncio.run(gateway_cpu(url, pid, args.seconds, watcher=name))
        r["idle_cpu_ms_per_s"] = (asyncio.run(_idle_cpu(url, pid, args.idle_seconds, name))
                                  if args.idle_seconds > 0 else 0.0)
    finally:
        if browser is not None:
            _stop(browser)
    return r


async def _idle_cpu(url: str, pid: int, seconds: float, watcher: str) -> float:
    """The gateway's CPU ms per second with no load (health checks, load polls, sampler, watcher)."""
    async with aiohttp.ClientSession() as page:
        polls = asyncio.create_task(_poll_like_the_page(page, url)) if watcher == "page-requests" else None
        await asyncio.sleep(1.5)  # past the first (whole-history) poll
        cpu0, t0 = _cpu_s(pid), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu1, t1 = _cpu_s(pid), time.perf_counter()
        if polls is not None:
            polls.cancel()
    return (cpu1 - cpu0) / (t1 - t0) * 1e3


def _cpu_split_s(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def run_cpu_comparison(args: argparse.Namespace, urls: list[str]) -> None:
    """`--cpu-runs N`: each `--variant NAME=SRC` (a dpserve source tree) in turn, N rounds."""
    variants = dict(v.split("=", 1) for v in args.variant) or {"this tree": ""}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for run in range(args.cpu_runs):
        for name, src in variants.items():
            port = _free_port()
            env = {**os.environ, "PYTHONPATH": src} if src else None
            cmd = [sys.executable, "-m", "dpserve", "router", "--port", str(port), "--policy", args.policy,
                   "--log-level", "warning", "--worker-urls", *urls]
            proc = _start(cmd, f"http://127.0.0.1:{port}/health", env)
            try:
                r = asyncio.run(gateway_cpu(f"http://127.0.0.1:{port}", proc.pid, args.seconds,
                                            args.concurrency))
            finally:
                _stop(proc)
            results[name].append(r)
            print(f"run {run} {name}: {r['cpu_us']:.0f} µs/req ({r['user_us']:.0f} user), "
                  f"{r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms", flush=True)
    print(f"c={args.concurrency}\n| gateway | cpu µs/req (user) median | range | req/s median (range) "
          "| p50 ms median | p99 ms median (range) |\n| --- | --- | --- | --- | --- | --- |")
    for name, rs in results.items():
        cpu = sorted(r["cpu_us"] for r in rs)
        rps = sorted(r["rps"] for r in rs)
        p99 = sorted(r["p99_ms"] for r in rs)
        print(f"| {name} | {statistics.median(cpu):.0f} ({statistics.median(r['user_us'] for r in rs):.0f}) "
              f"| {cpu[0]:.0f}–{cpu[-1]:.0f} | {statistics.median(rps):,.0f} ({rps[0]:,.0f}–{rps[-1]:,.0f}) "
              f"| {statistics.median(r['p50_ms'] for r in rs):.2f} "
              f"| {statistics.median(p99):.2f} ({p99[0]:.2f}–{p99[-1]:.2f}) |")


async def migration_points(gateways: dict[str, tuple[str, int]], args: argparse.Namespace) -> None:
    """Both gateways up at once, measured in alternation so the machine's load hits both alike:
    TTFC at c=1 request by request (A, B, A, B, ...), then per round c=16 streams (chunks/s and
    the gateway's CPU µs per relayed chunk) and a c=64 non-streaming window (CPU µs/request)."""
    names = list(gateways)
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as s:
        for url, _ in gateways.values():
            await _closed_loop(100, 8, lambda i, url=url: _one_stream(s, url, i))  # warm-up
        ttfc: dict[str, list[float]] = {n: [] for n in names}
        for i in range(args.c1_requests):
            for n in names:
                ttfc[n].append((await _one_stream(s, gateways[n][0], i))[0])
        rounds: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for r in range(args.migration_runs):
            for n in names:
                rounds[n].append(await _migration_round(s, *gateways[n], args))
                p = rounds[n][-1]
                print(f"round {r} {n}: {p['chunks_per_s']:,.0f} chunks/s, {p['cpu_us_per_chunk']:.1f} "
                      f"µs/chunk; non-streaming {p['whole_cpu_us']:.0f} µs/req", flush=True)
    _print_migration_table(names, ttfc, rounds)


async def _migration_round(s: aiohttp.ClientSession, url: str, pid: int,
                           args: argparse.Namespace) -> dict[str, float]:
    cpu0 = _cpu_s(pid)
    wall, streams = await _closed_loop(args.streams, 16, lambda i: _one_stream(s, url, i))
    chunks = sum(e for _, e in streams)
    point = {"chunks_per_s": chunks / wall, "cpu_us_per_chunk": (_cpu_s(pid) - cpu0) / chunks * 1e6}
    point.update({f"whole_{k}": v for k, v in (await gateway_cpu(url, pid, args.seconds)).items()})
    return point


def _print_migration_table(names: list[str], ttfc: dict[str, list[float]],
                           rounds: dict[str, list[dict[str, float]]]) -> None:
    diffs = [a - b for a, b in zip(ttfc[names[0]], ttfc[names[1]], strict=True)]
    print(f"TTFC p50 ms: {names[0]} {statistics.median(ttfc[names[0]]) * 1e3:.3f}, {names[1]} "
          f"{statistics.median(ttfc[names[1]]) * 1e3:.3f}; median of the paired differences "
          f"{statistics.median(diffs) * 1e3:+.3f} ms ({len(diffs)} pairs)")
    print("| gateway | chunks/s c=16 | gateway cpu µs/chunk | TTFC p50 ms (c=1) "
          "| non-streaming cpu µs/req |\n| --- | --- | --- | --- | --- |")
    for n in names:
        def cell(key: str, fmt: str, rs: list[dict[str, float]] = rounds[n]) -> str:
            vals = sorted(r[key] for r in rs)
            low, mid, high = (fmt.format(v) for v in (vals[0], statistics.median(vals), vals[-1]))
            return f"{mid} ({low}–{high})"
        print(f"| {n} | {cell('chunks_per_s', '{:,.0f}')} | {cell('cpu_us_per_chunk', '{:.1f}')} | "
              f"{statistics.median(ttfc[n]) * 1e3:.3f} | {cell('whole_cpu_us', '{:.0f}')} |")


def run_migration_comparison(args: argparse.Namespace, urls: list[str]) -> None:
    """`--migration-runs N`: dpserve with stream migration armed (the default) and with
    `--no-stream-migration`, side by side."""
    variants = {"migration on": [], "--no-stream-migration": ["--no-stream-migration"]}
    procs, gateways = [], {}
    try:
        for name, flags in variants.items():
            port = _free_port()
            cmd = [sys.executable, "-m", "dpserve", "router", "--port", str(port), "--policy", args.policy,
                   "--log-level", "warning", *flags, "--worker-urls", *urls]
            procs.append(_start(cmd, f"http://127.0.0.1:{port}/health"))
            gateways[name] = (f"http://127.0.0.1:{port}", procs[-1].pid)
        asyncio.run(migration_points(gateways, args))
    finally:
        for proc in procs:
            _stop(proc)


# ---- processes -----------------------------------------------------------------------------------

def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def _start(cmd: list[str], ready_url: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=env)
    _wait_ready(ready_url, proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _gateways(args: argparse.Namespace, urls: list[str]) -> dict[str, tuple[list[str], int]]:
    ours, theirs = _free_port(), _free_port()
    out = {f"dpserve router ({args.policy})": (
        [sys.executable, "-m", "dpserve", "router", "--port", str(ours), "--policy", args.policy,
         "--log-level", "warning", "--worker-urls", *urls], ours)}
    if args.sglang_python:
        out[f"sglang-router ({args.policy})"] = (
            [args.sglang_python, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port",
             str(theirs), "--policy", args.policy, "--log-level", "warn", "--worker-urls", *urls], theirs)
    return out


def _table(rows: dict[str, dict[str, float]]) -> str:
    keys = ["p50_ms", "p99_ms", "rps_c16", "rps_c64", "cpu_us_per_req_c16", "ttfc_p50_ms", "ttfc_p99_ms",
            "chunks_per_s_c16"]
    lines = ["| target | " + " | ".join(keys) + " |", "| --- " * (len(keys) + 1) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" if k.endswith("ms") else f"{r[k]:.0f}"
                                                  for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--policy", default="cache_aware")
    ap.add_argument("--c1-requests", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=6000, help="requests per throughput point")
    ap.add_argument("--streams", type=int, default=400, help="streams in the chunks/s point")
    ap.add_argument("--chunks", type=int, default=100, help="SSE chunks per stream")
    ap.add_argument("--sglang-python", default=None, help="python of a venv with sglang-router")
    ap.add_argument("--cpu-runs", type=int, default=0,
                    help="instead of the comparison: the dpserve gateway alone under c=64, N rounds")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=SRC",
                    help="with --cpu-runs: a dpserve source tree (put on PYTHONPATH) to alternate with")
    ap.add_argument("--seconds", type=float, default=5.0, help="with --cpu-runs: length of each run")
    ap.add_argument("--migration-runs", type=int, default=0,
                    help="instead of the comparison: dpserve with stream migration armed vs off, N rounds")
    ap.add_argument("--concurrency", type=int, default=64, help="with --cpu-runs: requests in flight")
    ap.add_argument("--dashboard-runs", type=int, default=0,
                    help="instead of the comparison: req/s with the dashboard closed vs watched, N rounds")
    ap.add_argument("--idle-seconds", type=float, default=20.0,
                    help="with --dashboard-runs: length of each no-load CPU measurement (0 = none)")
    ap.add_argument("--vllm-metrics", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-replicas", nargs="*", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_replicas:
        serve_replicas(args.serve_replicas, args.chunks, args.vllm_metrics)
        return
    from dpserve.http_server import install_uvloop

    ports = [_free_port() for _ in range(args.replicas)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    replicas = _start([sys.executable, __file__, "--chunks", str(args.chunks),
                       *(["--vllm-metrics"] if args.dashboard_runs else []), "--serve-replicas",
                       *map(str, ports)], urls[-1] + "/health")
    install_uvloop()
    if args.dashboard_runs:
        try:
            run_dashboard_comparison(args, urls)
        finally:
            _stop(replicas)
        return
    if args.cpu_runs or args.migration_runs:
        try:
            (run_cpu_comparison if args.cpu_runs else run_migration_comparison)(args, urls)
        finally:
            _stop(replicas)
        return
    rows: dict[str, dict[str, float]] = {}
    try:
        rows["direct (replica 0)"] = asyncio.run(measure(urls[0], args, replicas.pid))
        for name, (cmd, port) in _gateways(args, urls).items():
            proc = _start(cmd, f"http://127.0.0.1:{port}/health")
            try:
                rows[name] = asyncio.run(measure(f"http://127.0.0.1:{port}", args, proc.pid))
            finally:
                _stop(proc)
    finally:
        _stop(replicas)
    print(_table(rows))


if __name__ == "__main__":
    main()
