"""PlanConfig: every flag of `dpserve plan`, validated once."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dpserve.config import DEFAULT_MODEL, option, require, require_range, short_repr

ADMIN_KEY_ENV = "DPSERVE_ADMIN_KEY"
# Limits that keep one plan to seconds: layouts grow with the divisors of --num-gpus, and the
# load model's queue arithmetic with the batch slots.
MAX_GPUS = 4096
MAX_GPUS_PER_NODE = 72  # an NVL72 rack is one NVLink domain
MAX_NUM_SEQS = 16384
MAX_SCRAPES = 1000
# Upper bounds on the numbers a user gives: far beyond any deployment, low enough that the load
# model's floats stay finite and --json's integers fit orjson's 64 bits.
MAX_TOKENS = 10**8  # prompt or output tokens per request (today's longest contexts: ~10^7)
MAX_LOAD = 10**7  # requests in flight, or per second, over the fleet
MAX_BATCHED_TOKENS = 10**7  # the engine's token budget per step
MAX_SLO_MS = 86_400_000.0  # a day: an objective beyond it is no objective
MAX_TIME_SCALE = 1e4  # --simulate's speed-up (choose_time_scale lowers it so a step lasts 10 ms)
MAX_SIMULATE_TOP = 20  # --simulate runs its fleets one after another
MAX_SIMULATE_REQUESTS = 100_000  # per layout; each is a real HTTP request through the gateway
MAX_WINDOW_S = 3600.0  # --diagnose watches an hour at most

# (key, lowest, highest, lowest excluded): the workload's bounds, for the flags and a
# --workload-file alike (check_workload)
WORKLOAD_BOUNDS: tuple[tuple[str, float, float, bool], ...] = (
    ("prompt_len", 1, MAX_TOKENS, False), ("output_len", 1, MAX_TOKENS, False),
    ("concurrency", 1, MAX_LOAD, False), ("request_rate", 0.0, float(MAX_LOAD), True))


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_workload(values: Mapping[str, float | None], name: Callable[[str], str] = flag_name) -> None:
    """ConfigError unless every workload value present is in WORKLOAD_BOUNDS; `name(key)` says
    where it came from in the message."""
    for key, low, high, low_open in WORKLOAD_BOUNDS:
        require_range(name(key), values.get(key), low, high, low_open=low_open)


@dataclass(frozen=True)
class PlanConfig:
    """`dpserve plan`: the model, the GPUs, the workload and its SLOs; or --diagnose a fleet."""

    model: str = option(DEFAULT_MODEL, "built-in architecture (llama-3.1-8b/70b/405b, qwen3-14b/32b, "
                                       "mixtral-8x7b, deepseek-v3), the bundled model, or an HF config.json "
                                       "/ model directory")
    gpu: str = option("H100-80GB", "built-in GPU: H100-80GB, H200, A100-80GB, L40S, A10G, B200")
    gpu_spec: Path | None = option(None, metavar="FILE.yaml",
                                   help="your GPU instead of --gpu: name, memory_gb, hbm_gb_s, bf16_tflops, "
                                        "fp8_tflops, link_gb_s (per direction), link (nvlink|pcie), "
                                        "link_latency_us (per ring step), nvls (true: NVLink SHARP)")
    num_gpus: int = option(8, f"GPUs to lay out, 1..{MAX_GPUS} (every layout uses all of them)")
    gpus_per_node: int = option(8, f"GPUs per node, 1..{MAX_GPUS_PER_NODE}: a TP group, and a replica no "
                                   "larger than a node, stays inside one; larger replicas span whole nodes")
    dtype: Literal["bf16", "fp8", "int4"] = option("bf16", "weight precision")
    kv_dtype: Literal["bf16", "fp8"] = option("bf16", "KV-cache precision")
    prompt_len: int | None = option(None, "prompt tokens per request (default 1024, or the workload file's)")
    output_len: int | None = option(None, "output tokens per request (default 256, or the workload file's)")
    concurrency: int | None = option(None, "closed loop: requests in flight over the fleet (default 64)")
    request_rate: float | None = option(None, "open loop: Poisson arrivals per second over the fleet")
    workload_file: Path | None = option(None, metavar="FILE.yaml",
                                        help="a `dpserve bench --config` file: lengths and load from it "
                                             "(flags win)")
    ttft_slo_ms: float | None = option(None, "time-to-first-token objective, judged at p99")
    tpot_slo_ms: float | None = option(None, "time-per-output-token objective, judged at p99")
    max_num_seqs: int | None = option(None, f"the engine's running-batch cap per replica, 1..{MAX_NUM_SEQS} "
                                            "(default: vLLM V1's for the GPU, 1024 on ≥ 70 GiB GPUs but the "
                                            "A100, else 256)")
    max_num_batched_tokens: int | None = option(None, "the engine's token budget per step, chunked prefill "
                                                      "(default: vLLM V1's for the GPU, 8192 on ≥ 70 GiB "
                                                      "GPUs but the A100, else 2048)")
    as_json: bool = option(False, "print one JSON object instead of the table", flag="--json")
    simulate: bool = option(False, "also run the top layouts as `dpserve sim` fleets behind the gateway "
                                   "and print measured next to predicted")
    simulate_top: int = option(3, "--simulate: how many of the best layouts to run")
    simulate_requests: int = option(240, "--simulate: requests per layout")
    time_scale: float = option(20.0, "--simulate: the sims run this many times faster than real time")
    diagnose: str | None = option(None, metavar="URL",
                                  help="read a running gateway's /workers and its replicas' /metrics over "
                                       "--window-s and name the fleet's bottleneck (no plan is made)")
    window_s: float = option(10.0, "--diagnose: seconds to watch the fleet")
    scrapes: int = option(5, f"--diagnose: /metrics scrapes of each replica over the window, "
                             f"2..{MAX_SCRAPES}")
    admin_key: str | None = option(None, f"--diagnose: bearer key for the gateway's /workers (default: "
                                         f"${ADMIN_KEY_ENV})")

    def __post_init__(self) -> None:
        require(1 <= self.num_gpus <= MAX_GPUS, f"--num-gpus must be in 1..{MAX_GPUS}, got {self.num_gpus}")
        require(1 <= self.gpus_per_node <= MAX_GPUS_PER_NODE,
                f"--gpus-per-node must be in 1..{MAX_GPUS_PER_NODE}, got {self.gpus_per_node}")
        check_workload({k: getattr(self, k) for k, *_ in WORKLOAD_BOUNDS})
        require(self.concurrency is None or self.request_rate is None,
                "give --concurrency (closed loop) or --request-rate (open loop), not both")
        for name in ("ttft_slo_ms", "tpot_slo_ms"):
            require_range(flag_name(name), getattr(self, name), 0.0, MAX_SLO_MS, low_open=True)
        require_range("--max-num-seqs", self.max_num_seqs, 1, MAX_NUM_SEQS)
        require_range("--max-num-batched-tokens", self.max_num_batched_tokens, 1, MAX_BATCHED_TOKENS)
        require_range("--simulate-top", self.simulate_top, 1, MAX_SIMULATE_TOP)
        require_range("--simulate-requests", self.simulate_requests, 1, MAX_SIMULATE_REQUESTS)
        # Below 1 the sims would run slower than the hardware they model: no use, and 1e-300 never ends.
        require_range("--time-scale", self.time_scale, 1.0, MAX_TIME_SCALE)
        require_range("--window-s", self.window_s, 0.0, MAX_WINDOW_S, low_open=True)
        require(2 <= self.scrapes <= MAX_SCRAPES, f"--scrapes must be in 2..{MAX_SCRAPES}")
        require(self.diagnose is None or self.diagnose[:8].lower().startswith(("http://", "https://")),
                f"--diagnose must be an http(s):// URL, got {short_repr(self.diagnose)}")

    @property
    def resolved_admin_key(self) -> str | None:
        return self.admin_key or os.environ.get(ADMIN_KEY_ENV) or None
