"""Measure --group-by-prefix: prefix-cache hit rate and wall time over 2 fresh sims per run.

    .venv/bin/python -m tests.integration.offline.bench_group_by_prefix [--kv-cache-tokens N]

Workload: G groups of R requests; each group shares a long system prompt (W words), each request
adds its own short question; the input file is shuffled (seeded), as a real eval set would be.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import orjson

from tests.integration.offline.sims import SIM_MODEL, metric, run_batch, sim_replicas


def write_workload(path: Path, groups: int, per_group: int, words: int, seed: int) -> None:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    lines = []
    for g in range(groups):
        system = " ".join(rng.choice(vocab) for _ in range(words))
        for r in range(per_group):
            question = " ".join(rng.choice(vocab) for _ in range(12))
            lines.append({"custom_id": f"g{g}-r{r}", "method": "POST", "url": "/v1/chat/completions",
                          "body": {"model": SIM_MODEL, "max_tokens": 16, "temperature": 0,
                                   "messages": [{"role": "system", "content": system},
                                                {"role": "user", "content": question}]}})
    rng.shuffle(lines)
    path.write_bytes(b"".join(orjson.dumps(obj) + b"\n" for obj in lines))


def one_run(workdir: Path, replica: str, replica_args: list[str], grouped: bool,
            inflight: int) -> dict[str, float]:
    out, summary = workdir / f"out-{grouped}.jsonl", workdir / f"summary-{grouped}.json"
    with sim_replicas([replica_args, replica_args], workdir, command=replica) as urls:
        args = [str(workdir / "in.jsonl"), "-o", str(out), "--worker-urls", *urls, "--progress", "none",
                "--max-inflight-per-replica", str(inflight), "--summary-json", str(summary)]
        proc = run_batch([*args, "--group-by-prefix"] if grouped else args, timeout_s=600)
        assert proc.returncode == 0, proc.stderr
        hits = sum(metric(u, "vllm:prefix_cache_hits_total") for u in urls)
        queries = sum(metric(u, "vllm:prefix_cache_queries_total") for u in urls)
    report = orjson.loads(summary.read_bytes())
    return {"hit_rate": hits / queries, "wall_time_s": report["wall_time_s"],
            "req_s": report["request_throughput"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=48)
    parser.add_argument("--per-group", type=int, default=8)
    parser.add_argument("--words", type=int, default=1500)
    parser.add_argument("--kv-cache-tokens", type=int, default=32768)
    parser.add_argument("--time-scale", type=float, default=5.0)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replica", choices=["sim", "engine"], default="sim",
                        help="engine = the built-in PyTorch engine on the CPU (1 thread each)")
    opts = parser.parse_args()
    replica_args = ["--kv-cache-tokens", str(opts.kv_cache_tokens)]
    replica_args += (["--time-scale", str(opts.time_scale)] if opts.replica == "sim"
                     else ["--num-threads", "1", "--max-model-len", "2048"])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        write_workload(workdir / "in.jsonl", opts.groups, opts.per_group, opts.words, opts.seed)
        for grouped in (False, True):
            r = one_run(workdir, opts.replica, replica_args, grouped, opts.inflight)
            print(f"group_by_prefix={grouped!s:<5} prefix-cache hit rate {100 * r['hit_rate']:.1f}%  "
                  f"wall {r['wall_time_s']:.2f} s  {r['req_s']:.1f} req/s", flush=True)


if __name__ == "__main__":
    main()
