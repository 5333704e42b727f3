"""Routing experiment (issue 8): every gateway policy, plus SGLang Model Gateway's cache_aware, in
front of the same fresh fleet of `dpserve sim` replicas, on a shared-prefix and a multi-turn workload.

    .venv/bin/python benchmarks/routing_experiment/run.py --out-dir benchmarks/routing_experiment/results

The sims publish KV events (issue 17) and every dpserve router is told where (precise_prefix routes
on them; the other policies ignore them). A router named `2x:NAME` (e.g. `2x:precise_prefix`,
`2x:sglang:cache_aware`, via --two-gateways) is two such routers in front of the same fleet with
the traffic split between them request by request (a `dpserve router --policy round_robin` in
front of both, as a load balancer in front of gateway replicas would).

Writes results.json, results.md (the table) and routing.png into --out-dir. Every process listens on
127.0.0.1 and is stopped before the next run; each run gets a fresh fleet, so caches start empty.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import routers
from fleet import sim_fleet
from queue_trace import kv_counters, mean_ttft_ms, policy_decisions, sampled
from routers import MODEL, started
from tables import markdown_table, median_rows, summarize

TWO_GATEWAYS = "2x:"
BENCH_TIMEOUT_S = 900


@dataclass(frozen=True)
class Scenario:
    name: str
    bench_args: tuple[str, ...]
    policies: tuple[str, ...] | None  # None: every policy of the gateway
    with_sglang: bool = True


def gateway_policies() -> list[str]:
    """The --policy choices `dpserve router --help` lists (its registry), so new policies join in."""
    out = subprocess.run([sys.executable, "-m", "dpserve", "router", "--help"], capture_output=True,
                         text=True, check=True).stdout
    match = re.search(r"--policy \{([^}]*)\}", out)
    if match is None:
        raise RuntimeError("cannot find --policy choices in `dpserve router --help`")
    return match.group(1).split(",")


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    shared = ("--workload", "shared-prefix", "--num-groups", str(args.num_groups),
              "--prompts-per-group", str(args.prompts_per_group), "--system-prompt-len",
              str(args.system_prompt_len), "--question-len", "128", "--output-len", str(args.output_len),
              "--concurrency", str(args.concurrency))
    multi = ("--workload", "multi-turn", "--num-sessions", str(args.num_sessions), "--turns",
             str(args.turns), "--input-len", "256", "--output-len", str(args.output_len),
             "--concurrency", str(args.num_sessions // 2))
    return [Scenario("shared-prefix", shared, None),
            Scenario("multi-turn", multi,
                     ("round_robin", "consistent_hash", "cache_aware", "precise_prefix"))]


@contextmanager
def gateways(router_name: str, workers: list[str], log_dir: Path) -> Iterator[str]:
    """One router, or (`2x:NAME`) two behind a round-robin front; yields the URL the bench calls."""
    inner = router_name.removeprefix(TWO_GATEWAYS)
    with ExitStack() as stack:
        urls = [stack.enter_context(started(inner, workers, log_dir / f"router{i}.log"))
                for i in range(2 if inner != router_name else 1)]
        if len(urls) == 1:
            yield urls[0]
            return
        yield stack.enter_context(started("round_robin", urls, log_dir / "front.log"))


def run_bench(url: str, workers: list[str], scenario: Scenario, out: Path, seed: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "dpserve", "bench", "--url", url, "--model", MODEL, "--seed", str(seed),
            "--ignore-eos", "--metrics-urls", *workers, "--output-json", str(out), *scenario.bench_args]
    subprocess.run(argv, check=True, timeout=BENCH_TIMEOUT_S, stdout=subprocess.DEVNULL)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def one_run(args: argparse.Namespace, scenario: Scenario, router_name: str, repeat: int) -> dict[str, Any]:
    """Fresh fleet + one router + one bench; returns the bench report with the run's labels."""
    tag = f"{scenario.name}.{router_name}.{repeat}"
    log_dir = (args.log_dir or args.out_dir / "logs") / tag
    sim_args = ["--time-scale", str(args.time_scale), "--kv-cache-tokens", str(args.kv_cache_tokens),
                "--max-model-len", str(args.max_model_len), "--log-level", "warning"]
    kv_dir = log_dir / "kv" if args.kv_events else None
    with sim_fleet(args.replicas, sim_args, log_dir, kv_dir) as workers, \
            gateways(router_name, workers, log_dir) as url:
        # Every router gets the same wait after it routes to all sims, so each bench starts the
        # same time after its fleet (CPU settled after the start-up).
        time.sleep(args.sglang_settle_s)
        queueing: dict[str, Any] = {}
        interval = args.trace_interval_s
        with sampled(workers, interval, queueing) if interval else nullcontext():
            report = run_bench(url, workers, scenario, log_dir / "bench.json", args.seed)
        if interval:
            report["queueing"] = queueing
        if not router_name.startswith(TWO_GATEWAYS):
            report["decisions"] = policy_decisions(url)
            report["kv"] = kv_counters(url)
        report["ttft_mean_ms"] = {"replicas": mean_ttft_ms(workers, "vllm:time_to_first_token_seconds"),
                                  "gateway": mean_ttft_ms([url], "dpserve_time_to_first_token_seconds")}
    report["run"] = {"scenario": scenario.name, "router": router_name, "repeat": repeat, "workers": workers}
    return report


def write_json(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    (args.out_dir / "results.json").write_text(json.dumps(
        {"settings": {k: str(v) for k, v in vars(args).items()}, "runs": results}, indent=2))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--log-dir", type=Path, default=None, help="process logs (default: OUT_DIR/logs)")
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--time-scale", type=float, default=0.5,
                   help="sims run at this multiple of real time (< 1 keeps the shared CPU out of the way)")
    p.add_argument("--kv-cache-tokens", type=int, default=24_576)
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--num-groups", type=int, default=64)
    p.add_argument("--prompts-per-group", type=int, default=16)
    p.add_argument("--system-prompt-len", type=int, default=2048)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--num-sessions", type=int, default=64)
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="runs per (workload, router); the table shows "
                   "the run with the median output throughput")
    p.add_argument("--policies", nargs="*", default=None, help="default: all of `dpserve router`'s")
    p.add_argument("--scenarios", nargs="*", default=["shared-prefix", "multi-turn"])
    p.add_argument("--no-sglang", action="store_true", help="skip SGLang's router")
    p.add_argument("--sglang-python", type=Path, default=routers.sglang_python,
                   help="python of the venv where sglang-router is installed")
    p.add_argument("--no-kv-events", dest="kv_events", action="store_false",
                   help="sims publish no KV events (precise_prefix then routes like cache_aware)")
    p.add_argument("--two-gateways", nargs="*", default=[],
                   help="routers to also run as two gateways splitting the traffic (e.g. precise_prefix "
                        "cache_aware sglang:cache_aware)")
    p.add_argument("--sglang-policies", nargs="*", default=["cache_aware"],
                   help="SGLang router policies to run (e.g. round_robin too, to measure router overhead)")
    p.add_argument("--sglang-settle-s", type=float, default=3.0,
                   help="wait between a router's readiness (all sims registered) and the bench (every "
                   "router, for fairness)")
    p.add_argument("--trace-interval-s", type=float, default=0.0,
                   help="sample each sim's running/waiting gauges this often during the bench (0: off); "
                   "the spread across replicas lands in results.json under 'queueing'")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    all_policies = args.policies if args.policies is not None else gateway_policies()
    routers.sglang_python = args.sglang_python
    use_sglang = not args.no_sglang and args.sglang_python.exists()
    results = []
    for scenario in scenarios(args):
        if scenario.name not in args.scenarios:
            continue
        names = [p for p in (scenario.policies or all_policies) if p in all_policies]
        if use_sglang and scenario.with_sglang:
            names += [f"sglang:{p}" for p in args.sglang_policies]
        names += [TWO_GATEWAYS + r for r in args.two_gateways if use_sglang or not r.startswith("sglang:")]
        for repeat in range(args.repeats):
            for name in names:
                print(f"== {scenario.name} / {name} / run {repeat + 1} of {args.repeats}", flush=True)
                try:
                    results.append(one_run(args, scenario, name, repeat))
                except (RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
                    print(f"run failed, left out of the table: {exc}", flush=True)
                    continue
                print(json.dumps(summarize(results[-1])), flush=True)
                write_json(args, results)  # after every run: a later crash keeps what was measured
    rows = median_rows([summarize(r) for r in results])
    (args.out_dir / "results.md").write_text(markdown_table(rows))
    from plot import plot

    plot(rows, args.out_dir / "routing.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
