"""PlanConfig: every flag of `dpserve plan`, validated once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dpserve.config import DEFAULT_MODEL, option, require

ADMIN_KEY_ENV = "DPSERVE_ADMIN_KEY"
# Limits that keep one plan to seconds: layouts grow with the divisors of --num-gpus, and the
# load model's queue arithmetic with the batch slots.
MAX_GPUS = 4096
MAX_GPUS_PER_NODE = 72  # an NVL72 rack is one NVLink domain
MAX_NUM_SEQS = 16384
MAX_SCRAPES = 1000


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
    gpus_per_node: int = option(8, f"GPUs per node, 1..{MAX_GPUS_PER_NODE}: TP stays inside a node, PP "
                                   "and DP may cross")
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
        for name in ("prompt_len", "output_len", "concurrency"):
            value = getattr(self, name)
            require(value is None or value >= 1, f"--{name.replace('_', '-')} must be >= 1, got {value}")
        require(self.request_rate is None or self.request_rate > 0,
                f"--request-rate must be > 0, got {self.request_rate}")
        require(self.concurrency is None or self.request_rate is None,
                "give --concurrency (closed loop) or --request-rate (open loop), not both")
        for name in ("ttft_slo_ms", "tpot_slo_ms"):
            value = getattr(self, name)
            require(value is None or value > 0, f"--{name.replace('_', '-')} must be > 0, got {value}")
        require(self.max_num_seqs is None or 1 <= self.max_num_seqs <= MAX_NUM_SEQS,
                f"--max-num-seqs must be in 1..{MAX_NUM_SEQS}")
        require(self.max_num_batched_tokens is None or self.max_num_batched_tokens >= 1,
                "--max-num-batched-tokens must be >= 1")
        require(self.simulate_top >= 1 and self.simulate_requests >= 1,
                "--simulate-top and --simulate-requests must be >= 1")
        require(self.time_scale > 0, "--time-scale must be > 0")
        require(self.window_s > 0, "--window-s must be > 0")
        require(2 <= self.scrapes <= MAX_SCRAPES, f"--scrapes must be in 2..{MAX_SCRAPES}")
        require(self.diagnose is None or self.diagnose.startswith(("http://", "https://")),
                f"--diagnose must be an http(s):// URL, got {self.diagnose!r}")

    @property
    def resolved_admin_key(self) -> str | None:
        return self.admin_key or os.environ.get(ADMIN_KEY_ENV) or None
