"""Where a run's TTFT tail comes from: per-request TTFT of an experiment workload, first wave vs the rest.

    .venv/bin/python benchmarks/routing_experiment/first_wave.py --routers cache_aware sglang:cache_aware \
        --runs 4 --out benchmarks/routing_experiment/results/first_wave.json

Each run: a fresh fleet (empty caches) and a fresh router, then the experiment's multi-turn (or
`--workload shared-prefix`) workload through `dpserve.bench`'s runner, keeping every request (start,
TTFT, replica from x-dpserve-worker). The first `concurrency` requests start together on cold
replicas (the "first wave"); the summary splits TTFT into that wave and the rest, says how many of
the slowest 1% (where p99 sits) were in it, and counts first-wave requests under 70 ms (on
multi-turn: prefilled alone, as a replica's first arrival starts a step at once and the others wait).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from fleet import sim_fleet
from routers import MODEL, started

from dpserve.bench.benchmark import build_arrivals, build_conversations, make_text
from dpserve.bench.config import BenchConfig
from dpserve.bench.payload import RequestOptions
from dpserve.bench.runner import Runner

# A first-wave request prefilled alone finishes its step in well under this (~30 ms of step plus
# overheads at --time-scale 0.5); one that waited for a step first takes ~100 ms.
ALONE_BELOW_MS = 70.0


async def run_requests(url: str, config: BenchConfig) -> list[dict[str, Any]]:
    """The workload of `config` against `url`; one row per request, in start order."""
    text = make_text(config)
    conversations = build_conversations(config, text)
    arrivals = build_arrivals(config, len(conversations))
    opts = RequestOptions(endpoint="chat", model=MODEL, stream=True, ignore_eos=True)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        runner = Runner(http, url, opts, max_in_flight=config.max_in_flight, timeout_s=120.0)
        await runner.run(conversations, arrivals)
    rows = [{"start_ms": 1000 * r.start_s, "ttft_ms": None if r.ttft_s is None else 1000 * r.ttft_s,
             "worker": r.worker, "prompt_tokens": r.prompt_tokens, "ok": r.ok} for r in runner.results]
    rows.sort(key=lambda r: r["start_ms"])
    if all(len(c.turns) == 1 for c in conversations):  # single-turn: sent in list order (FIFO slots)
        groups = {text: i for i, text in enumerate(dict.fromkeys(c.system_text for c in conversations))}
        for row, conv in zip(rows, conversations, strict=True):
            row["group"] = groups[conv.system_text]
    return rows


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(rows: list[dict[str, Any]], wave: int) -> dict[str, Any]:
    """TTFT of the first wave (cold burst) and of the rest; how many first-wave requests ran alone."""
    ttft = [r["ttft_ms"] for r in rows if r["ttft_ms"] is not None]
    placed = Counter(r["worker"] for r in rows[:wave] if r["worker"] is not None)  # dpserve routers only
    # shared-prefix: distinct groups each replica got in the first wave (its cold prefill work)
    prefixes = Counter(w for w, _ in {(r["worker"], r["group"]) for r in rows[:wave]
                                      if r["worker"] is not None and "group" in r})
    first, rest = ttft[:wave], ttft[wave:]
    slowest = sorted(range(len(ttft)), key=ttft.__getitem__)[-max(1, len(ttft) // 100):]  # p99 is there
    alone = [t for t in first if t < ALONE_BELOW_MS]
    waited = [t for t in first if t >= ALONE_BELOW_MS]
    return {
        "p99_all_ms": statistics.quantiles(ttft, n=100)[98], "p50_all_ms": statistics.median(ttft),
        "first_wave_alone": len(alone),
        "first_wave_alone_mean_ms": statistics.fmean(alone) if alone else None,
        "first_wave_waited_mean_ms": statistics.fmean(waited) if waited else None,
        "first_wave_max_ms": max(first), "rest_p99_ms": _pct(rest, 0.99), "rest_max_ms": max(rest),
        "first_wave_p50_ms": statistics.median(first),
        "first_wave_per_replica": sorted(placed.values(), reverse=True),
        "first_wave_prefixes_per_replica": sorted(prefixes.values(), reverse=True),
        "slowest_1pct": len(slowest), "slowest_1pct_in_first_wave": sum(1 for i in slowest if i < wave),
    }


def bench_config(args: argparse.Namespace) -> BenchConfig:
    """The experiment's settings of run.py for `--workload` (multi-turn or shared-prefix)."""
    if args.workload == "shared-prefix":
        return BenchConfig(url="http://unused", model=MODEL, workload="shared-prefix", seed=args.seed,
                           num_groups=64, prompts_per_group=16, system_prompt_len=2048, question_len=128,
                           output_len=32, concurrency=64, ignore_eos=True)
    return BenchConfig(url="http://unused", model=MODEL, workload="multi-turn", seed=args.seed,
                       num_sessions=args.num_sessions, turns=args.turns, input_len=256,
                       output_len=32, concurrency=args.num_sessions // 2, ignore_eos=True)


def one_run(name: str, config: BenchConfig, args: argparse.Namespace, tag: str) -> list[dict[str, Any]]:
    sim_args = ["--time-scale", str(args.time_scale), "--kv-cache-tokens", str(args.kv_cache_tokens),
                "--max-model-len", "8192", "--log-level", "warning"]
    log_dir = args.log_dir / tag
    with sim_fleet(args.replicas, sim_args, log_dir) as workers, \
            started(name, workers, log_dir / "router.log") as url:
        time.sleep(args.settle_s)  # as run.py: every router gets the same wait
        return asyncio.run(run_requests(url, config))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--routers", nargs="+", default=["cache_aware", "sglang:cache_aware"])
    p.add_argument("--workload", choices=["multi-turn", "shared-prefix"], default="multi-turn")
    p.add_argument("--runs", type=int, default=3, help="fresh fleet + router per run, routers alternating")
    p.add_argument("--out", type=Path, default=Path("first_wave.json"))
    p.add_argument("--log-dir", type=Path, default=Path("/tmp/dpserve-first-wave"))
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--time-scale", type=float, default=0.5)
    p.add_argument("--kv-cache-tokens", type=int, default=24_576)
    p.add_argument("--num-sessions", type=int, default=64)
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--settle-s", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in args.routers}
    for run in range(args.runs):
        for name in args.routers:
            config = bench_config(args)
            rows = one_run(name, config, args, f"{name}.{run}")
            summary = summarize(rows, config.max_in_flight or len(rows))
            out[name].append({"summary": summary, "requests": rows})
            print(name, run, json.dumps({k: v if not isinstance(v, float) else round(v, 1)
                                         for k, v in summary.items()}), flush=True)
            args.out.write_text(json.dumps(out, indent=1))
    args.out.with_suffix(".md").write_text(summary_table(out))
    return 0


def summary_table(out: dict[str, list[dict[str, Any]]]) -> str:
    """One markdown row per run: the figures that place the TTFT tail."""
    lines = ["| router | run | TTFT p99 ms | p50 | first wave p50 | first wave max | after it p99 | "
             "slowest 1% in first wave | first wave per replica (requests; new prefixes) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for name, runs in out.items():
        for i, run in enumerate(runs):
            s = run["summary"]
            placed = " ".join(map(str, s["first_wave_per_replica"])) or "-"
            prefixes = " ".join(map(str, s["first_wave_prefixes_per_replica"])) or "-"
            ms = " | ".join(f"{s[k]:.0f}" for k in ("p99_all_ms", "p50_all_ms", "first_wave_p50_ms",
                                                   "first_wave_max_ms", "rest_p99_ms"))
            lines.append(f"| {name} | {i} | {ms} | {s['slowest_1pct_in_first_wave']}/{s['slowest_1pct']} | "
                         f"{placed}; {prefixes} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
