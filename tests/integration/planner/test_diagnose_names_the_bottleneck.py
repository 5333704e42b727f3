"""`plan --diagnose` against simulated fleets driven into each state names that state.

Three fleets run at once (each `dpserve serve --backend sim` in-process, sim replicas as
subprocesses on 127.0.0.1), each under its own closed-loop load from bench's driver:
- too few replicas: one replica capped at 4 running sequences, 16 in flight → replica-bound;
- KV too small: one replica with 2,048 KV tokens, 16 sequences of up to 600 → KV-bound;
- fine: two replicas, 2 in flight → ok.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import pytest

from dpserve.bench.benchmark import run_benchmark
from dpserve.bench.config import BenchConfig
from dpserve.diagnosis import State
from dpserve.planner.diagnose import diagnose_url
from dpserve.planner.simulate import sim_fleet

pytestmark = pytest.mark.slow

CASES = {
    "too_few_replicas": (["--max-num-seqs", "4"], 1, 16, 64, 200, State.REPLICA_BOUND),
    "kv_too_small": (["--kv-cache-tokens", "2048", "--max-model-len", "1024", "--max-num-seqs", "64"],
                     1, 16, 200, 400, State.KV_BOUND),
    "fine": ([], 2, 2, 64, 200, State.OK),
}


async def _loaded(url: str, in_flight: int, timeout_s: float = 60.0) -> None:
    """Until the gateway's load poller sees the replicas running what the bench sends."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(url + "/workers") as resp:
                workers = await resp.json()
            if sum(w["running"] + w["waiting"] for w in workers) >= in_flight:
                return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url}: the load never reached the replicas")


async def _diagnose_under_load(case: str) -> tuple[State, str]:
    engine_args, dp, in_flight, prompt, output, _ = CASES[case]
    args = [*engine_args, "--natural-output-len", "0"]
    async with sim_fleet(args, dp) as url:
        stop = asyncio.Event()
        bench = BenchConfig(url=url, endpoint="completions", num_prompts=10_000, input_len=prompt,
                            output_len=output, concurrency=in_flight, ignore_eos=True, stream=False,
                            progress_interval_s=3600.0)
        load = asyncio.create_task(run_benchmark(bench, stop))
        try:
            await _loaded(url, in_flight)
            diagnosis, _ = await diagnose_url(url, admin_key=None, window_s=2.0, scrapes=4)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await load
    return diagnosis.fleet.state, diagnosis.fleet.message


async def test_diagnose_names_each_state() -> None:
    results = await asyncio.gather(*(_diagnose_under_load(case) for case in CASES))
    for case, (state, message) in zip(CASES, results, strict=True):
        assert state is CASES[case][-1], f"{case}: {state.value}: {message}"
