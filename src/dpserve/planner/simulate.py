"""`plan --simulate`: run the top layouts as `dpserve sim` fleets behind the gateway, measure, compare.

Each layout runs exactly as `dpserve serve --backend sim --dp-size DP` would (launcher's
ServeService: the gateway in this process, DP sim replicas as supervised subprocesses on
127.0.0.1 ports), with each replica's time model, KV capacity and batch cap from sim_profile.py;
`dpserve bench`'s driver sends the workload through the gateway. The sims run at a time scale
chosen per layout so one step lasts at least MIN_WALL_STEP_S of wall time (the event loops' own
work then stays small next to it); measured times are converted back to model time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from dpserve.config import DEFAULT_HOST, ConfigError
from dpserve.planner.config import PlanConfig
from dpserve.planner.plan import Plan
from dpserve.planner.predict import Prediction, Setting
from dpserve.planner.report import format_table
from dpserve.planner.sim_profile import sim_flags

MIN_WALL_STEP_S = 0.01
LENGTH_RANGE = 0.5
READY_TIMEOUT_S = 120.0
# Each replica is a `dpserve sim` process on this machine, with its own port and share of the CPUs:
# a plan for thousands of GPUs must not start thousands of them.
MAX_SIM_REPLICAS = 32


@dataclass(frozen=True)
class Simulated:
    """One layout: what the plan predicted and what its simulated fleet measured (model time)."""

    prediction: Prediction
    time_scale: float
    completed: int
    failed: int
    output_tok_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tpot_p50_ms: float | None
    tpot_p99_ms: float | None

    def to_json(self) -> dict[str, Any]:
        p = self.prediction
        assert p.load is not None
        return {"label": p.layout.label, "dp": p.layout.dp, "tp": p.layout.tp, "pp": p.layout.pp,
                "time_scale": self.time_scale, "completed": self.completed, "failed": self.failed,
                "predicted": {"output_tok_s": p.output_tok_s, "ttft_p50_ms": p.load.ttft_p50_s * 1e3,
                              "ttft_p99_ms": p.load.ttft_p99_s * 1e3, "tpot_p50_ms": p.load.tpot_p50_s * 1e3,
                              "tpot_p99_ms": p.load.tpot_p99_s * 1e3},
                "measured": {"output_tok_s": self.output_tok_s, "ttft_p50_ms": self.ttft_p50_ms,
                             "ttft_p99_ms": self.ttft_p99_ms, "tpot_p50_ms": self.tpot_p50_ms,
                             "tpot_p99_ms": self.tpot_p99_ms}}


def choose_time_scale(p: Prediction, s: Setting, most: float) -> float:
    """As fast as `most`, but slow enough that a step at the predicted load lasts MIN_WALL_STEP_S."""
    from dpserve.planner.formulas import engine_limits, steady_state

    assert p.costs is not None and p.load is not None
    budget = engine_limits(s.assumptions, s.gpu)[1]
    step = steady_state(p.costs, max(1.0, p.load.batch), s.workload.shape, budget).step_s
    return min(most, step / MIN_WALL_STEP_S)


def simulate_plan(config: PlanConfig, plan: Plan) -> list[Simulated]:
    """Simulate the best `--simulate-top` layouts the sim can run (not DP-attention), one at a time."""
    from dpserve.http_server import run_on_uvloop

    chosen = [p for p in plan.ranked if not p.layout.dp_attention][:config.simulate_top]
    check_fleet_sizes(chosen, config.simulate_top)
    with contextlib.redirect_stdout(sys.stderr):  # the launcher's banner must not mix into --json
        return [run_on_uvloop(_simulate_one(config, plan.setting, p)) for p in chosen]


def check_fleet_sizes(chosen: list[Prediction], top: int) -> None:
    """ConfigError, before anything starts, when a chosen layout needs more than MAX_SIM_REPLICAS."""
    big = next((p for p in chosen if p.layout.dp > MAX_SIM_REPLICAS), None)
    if big is not None:
        raise ConfigError(f"--simulate runs at most {MAX_SIM_REPLICAS} sim replicas per layout, and "
                          f"{big.layout.label} (among the top {top}) has {big.layout.dp}: lower --num-gpus "
                          "or --simulate-top, or drop --simulate")


async def _simulate_one(config: PlanConfig, s: Setting, p: Prediction) -> Simulated:
    scale = choose_time_scale(p, s, config.time_scale)
    print(f"plan --simulate: {p.layout.label} as {p.layout.dp} sim replica(s) at time scale {scale:.3g}",
          file=sys.stderr, flush=True)
    async with sim_fleet(sim_flags(s, p, scale, LENGTH_RANGE), p.layout.dp) as url:
        report = await _drive(url, config, s, scale)
    times = (_model_ms(report, key, q, scale) for key in ("ttft_ms", "tpot_ms") for q in ("p50", "p99"))
    return Simulated(p, scale, report["completed"], report["failed"], report["output_throughput"] / scale,
                     *times)


def _model_ms(report: dict[str, Any], key: str, q: str, scale: float) -> float | None:
    value = report.get(key, {}).get(q)
    return None if value is None else value * scale


async def _drive(url: str, config: PlanConfig, s: Setting, scale: float) -> dict[str, Any]:
    """The plan's workload through the gateway with bench's driver (closed or open loop), in wall time."""
    from dpserve.bench.benchmark import run_benchmark
    from dpserve.bench.config import BenchConfig

    w = s.workload
    # Lengths uniform ±RANGE around the plan's: identical requests started together would march
    # in lock-step for ever (all prefilling in one step, then all decoding), which no real load does.
    bench = BenchConfig(url=url, endpoint="completions", workload="random",
                        num_prompts=config.simulate_requests, input_len=w.prompt_len, output_len=w.output_len,
                        range_ratio=LENGTH_RANGE, ignore_eos=True, concurrency=w.concurrency,
                        request_rate=None if w.request_rate is None else w.request_rate * scale,
                        progress_interval_s=3600.0)
    return await run_benchmark(bench)


@contextlib.asynccontextmanager
async def sim_fleet(engine_args: list[str], dp: int) -> AsyncIterator[str]:
    """`dpserve serve --backend sim --dp-size dp` inside this process; yields the gateway URL once
    every replica is routable, stops everything on exit. (Like `serve`, it prints its usage banner.)"""
    import shlex

    from dpserve.gateway.config import GatewayConfig
    from dpserve.launcher.config import LaunchConfig, ServeConfig
    from dpserve.launcher.gateway import build_gateway_site
    from dpserve.launcher.plan import build_plan
    from dpserve.launcher.ports import PortAllocator
    from dpserve.launcher.service import ServeService

    ports = PortAllocator(DEFAULT_HOST)
    with tempfile.TemporaryDirectory(prefix="dpserve-plan-sim-") as logs:
        try:
            gateway_port = ports.reserve()
            launch = LaunchConfig(model="sim", backend="sim", dp_size=dp, engine_args=shlex.join(engine_args),
                                  stagger_s=0.0, echo_replica_logs=False, log_dir=Path(logs),
                                  startup_timeout_s=READY_TIMEOUT_S)
            serve = ServeConfig(launch=launch, gateway=GatewayConfig(host=DEFAULT_HOST, port=gateway_port))
            plan = build_plan(launch, [ports.reserve() for _ in range(dp)])
            service = ServeService(launch, plan, build_gateway_site(serve), Path(logs))
            url = f"http://{DEFAULT_HOST}:{gateway_port}"
            task = asyncio.create_task(service.run())
            try:
                await _wait_routable(url, dp, task)
                yield url
            finally:
                service.request_stop()
                await task
        finally:
            ports.release_all()


async def _wait_routable(url: str, dp: int, service: asyncio.Task[int]) -> None:
    """Until the gateway lists `dp` healthy workers (or the service ended: then say why)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if service.done():
                raise RuntimeError(f"the simulated fleet stopped before it was ready "
                                   f"(exit {service.result()})")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url + "/workers") as resp:
                    if resp.status == 200 and sum(bool(w.get("healthy")) for w in await resp.json()) >= dp:
                        return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{dp} simulated replicas not routable at {url} after {READY_TIMEOUT_S:.0f}s")


_COLUMNS = ("layout", "scale", "done", "tok/s pred", "tok/s meas", "TTFT p50 pred/meas ms",
            "TTFT p99 pred/meas ms", "TPOT p50 pred/meas ms", "TPOT p99 pred/meas ms")


def simulated_text(sims: list[Simulated]) -> str:
    def pair(pred: float, meas: float | None) -> str:
        return f"{pred:.1f}/{'-' if meas is None else f'{meas:.1f}'}"

    rows = []
    for x in sims:
        load = x.prediction.load
        assert load is not None
        rows.append([x.prediction.layout.label, f"{x.time_scale:.3g}",
                     f"{x.completed}/{x.completed + x.failed}", f"{x.prediction.output_tok_s:.0f}",
                     f"{x.output_tok_s:.0f}",
                     pair(load.ttft_p50_s * 1e3, x.ttft_p50_ms), pair(load.ttft_p99_s * 1e3, x.ttft_p99_ms),
                     pair(load.tpot_p50_s * 1e3, x.tpot_p50_ms), pair(load.tpot_p99_s * 1e3, x.tpot_p99_ms)])
    order = sorted(sims, key=lambda x: -x.output_tok_s)
    agree = [x.prediction.layout.label for x in order] == [x.prediction.layout.label for x in sims]
    return "\n".join(["simulated (dpserve sim fleets behind the gateway; times in model seconds):",
                      format_table(rows, _COLUMNS), "",
                      f"measured ranking by tok/s: {' > '.join(x.prediction.layout.label for x in order)} "
                      f"({'agrees with' if agree else 'differs from'} the predicted order)"])
