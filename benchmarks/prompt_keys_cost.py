"""What computing a request's KV block keys costs the gateway: on the event loop vs in precise_prefix's
tokenizer process (gateway/kv_events/prompt_keys.py), prompts of 100 B .. 100 KB, chat and completions.

Per (tokenizer, endpoint, prompt size), medians over repeats of:
- `inline_us`: `block_keys_for` called on the loop: the request's added latency and, all of it,
  time the loop serves nobody else;
- `process_us`: `await PromptKeyer.keys(...)` (pickle the body to the worker process, tokenise there,
  pickle the keys back): the request's added latency;
- `process_loop_cpu_us`: CPU the loop's thread spends per process call (submitting, waking up);
- `burst_inline_ms` / `burst_process_ms` and `burst_*_lag_ms`: 32 requests at once (a burst
  at the gateway): wall time until all have keys, and the longest stall of a 1 ms ticker running
  on the same loop meanwhile (how long the loop could not proxy other requests' bytes);
- `busy_process_p50_us` / `busy_process_max_us`: `PromptKeyer.keys` latency, one call at a time,
  while 4 tasks keep the loop busy (each spins 0.4 ms, then sleeps 0.1 ms: a saturated gateway),
  over --busy-repeats calls.

    flock /tmp/dpserve-bench.lock .venv/bin/python benchmarks/prompt_keys_cost.py \\
        --tokenizers sim smollm2-135m --sizes 100 1000 10000 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dpserve.bench.text import WORDS
from dpserve.gateway.kv_events.prompt_keys import PromptKeyer, block_keys_for, load_tokenizer

BLOCK_SIZE = 16
BURST = 32
ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


def text_of(num_bytes: int, salt: int) -> str:
    words, size, i = [], 0, salt
    while size < num_bytes:
        word = WORDS[(i * 7919) % len(WORDS)]
        words.append(word)
        size += len(word) + 1
        i += 1
    return " ".join(words)[:num_bytes]


def body_of(kind: str, text: str) -> dict[str, Any]:
    if kind == "chat":
        return {"model": "m", "messages": [{"role": "system", "content": "You are helpful."},
                                           {"role": "user", "content": text}]}
    return {"model": "m", "prompt": text}


async def _median_us(call: Callable[[int], Awaitable[Any]], repeats: int) -> tuple[float, float]:
    """Median wall µs and median loop-thread CPU µs per call (each call gets a fresh prompt)."""
    walls, cpus = [], []
    for i in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        await call(i)
        cpus.append((time.thread_time() - c0) * 1e6)
        walls.append((time.perf_counter() - w0) * 1e6)
    return statistics.median(walls), statistics.median(cpus)


async def _burst(call: Callable[[int], Awaitable[Any]]) -> tuple[float, float]:
    """BURST concurrent calls: (wall ms until all are done, longest 1 ms ticker stall in ms)."""
    done = asyncio.Event()
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    await asyncio.gather(*(call(10_000 + i) for i in range(BURST)))
    wall = time.perf_counter() - t0
    done.set()
    await tick
    return wall * 1e3, worst * 1e3


async def _busy(call: Callable[[int], Awaitable[Any]], repeats: int) -> tuple[float, float]:
    """(p50, max) µs of `call` while spinners keep the loop's thread busy."""
    stop = False

    async def spinner() -> None:
        while not stop:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.0004:
                pass
            await asyncio.sleep(0.0001)

    spinners = [asyncio.create_task(spinner()) for _ in range(4)]
    walls = []
    for i in range(repeats):
        t0 = time.perf_counter()
        await call(i)
        walls.append((time.perf_counter() - t0) * 1e6)
    stop = True
    await asyncio.gather(*spinners)
    return statistics.median(walls), max(walls)


async def measure(spec: str, kind: str, size: int, repeats: int, busy_repeats: int,
                  keyer: PromptKeyer) -> dict[str, Any]:
    tokenizer = load_tokenizer(spec)
    endpoint = ENDPOINTS[kind]
    # Built before timing: making a 100 KB text costs milliseconds that are not the gateway's.
    bodies = {i: body_of(kind, text_of(size, i)) for i in [*range(repeats), *range(10_000, 10_000 + BURST)]}

    async def inline(i: int) -> Any:
        return block_keys_for(tokenizer, endpoint, bodies[i], BLOCK_SIZE)

    async def process(i: int) -> Any:
        return await keyer.keys(endpoint, bodies[i], BLOCK_SIZE)

    await process(0)  # the worker is up and warm
    keys = await inline(0)
    assert keys is not None and keys == await process(0), "process and loop disagree"
    inline_us, _ = await _median_us(inline, repeats)
    process_us, process_cpu_us = await _median_us(process, repeats)
    burst_inline_ms, burst_inline_lag_ms = await _burst(inline)
    burst_process_ms, burst_process_lag_ms = await _burst(process)
    busy_p50_us, busy_max_us = await _busy(process, min(busy_repeats, repeats))
    return {"tokenizer": spec, "endpoint": kind, "bytes": size, "tokens": keys[1],
            "inline_us": round(inline_us), "process_us": round(process_us),
            "process_loop_cpu_us": round(process_cpu_us),
            "burst_inline_ms": round(burst_inline_ms, 1),
            "burst_inline_lag_ms": round(burst_inline_lag_ms, 1),
            "burst_process_ms": round(burst_process_ms, 1),
            "burst_process_lag_ms": round(burst_process_lag_ms, 1),
            "busy_process_p50_us": round(busy_p50_us), "busy_process_max_us": round(busy_max_us)}


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for spec in args.tokenizers:
        keyer = PromptKeyer(spec)
        try:
            for kind in args.endpoints:
                for size in args.sizes:
                    repeats = max(5, min(args.repeats, args.repeats * 1000 // size))
                    row = await measure(spec, kind, size, repeats, args.busy_repeats, keyer)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            keyer.close()
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    cols = ["tokenizer", "endpoint", "bytes", "tokens", "inline_us", "process_us", "process_loop_cpu_us",
            "burst_inline_ms", "burst_inline_lag_ms", "burst_process_ms", "burst_process_lag_ms",
            "busy_process_p50_us", "busy_process_max_us"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizers", nargs="+", default=["sim", "smollm2-135m"])
    p.add_argument("--endpoints", nargs="+", default=list(ENDPOINTS), choices=list(ENDPOINTS))
    p.add_argument("--sizes", nargs="+", type=int, default=[100, 1000, 10_000, 100_000])
    p.add_argument("--repeats", type=int, default=200, help="calls per cell (fewer for large prompts)")
    p.add_argument("--busy-repeats", type=int, default=20, help="calls per cell on the busy loop")
    args = p.parse_args()
    print(markdown(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
