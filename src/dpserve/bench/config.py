"""`dpserve bench` configuration: target, workload shape, load pattern, report options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dpserve.bench.workloads import WORKLOAD_NAMES
from dpserve.config import DEFAULT_GATEWAY_PORT, DEFAULT_HOST, option, require

DEFAULT_CLOSED_LOOP_CONCURRENCY = 8


@dataclass(frozen=True)
class BenchConfig:
    """Everything one benchmark run needs; validated once here."""

    url: str = option(f"http://{DEFAULT_HOST}:{DEFAULT_GATEWAY_PORT}",
                      "base URL of any OpenAI-compatible server (gateway, replica, vLLM, SGLang)")
    endpoint: Literal["chat", "completions"] = option("chat", "which OpenAI endpoint to call")
    model: str | None = option(None, "model name to send (default: the first one /v1/models lists)")
    api_key: str | None = option(None, "sent as 'Authorization: Bearer KEY'")
    workload: str = option("random", "prompt generator", choices=WORKLOAD_NAMES)
    num_prompts: int = option(100, "requests to send (random, sharegpt)")
    input_len: int = option(256, "prompt tokens (random) / tokens per user turn (multi-turn)")
    output_len: int = option(64, "max_tokens of each request (sharegpt: its own reply length)")
    range_ratio: float = option(0.0, "random: lengths uniform in [L*(1-r), L*(1+r)]")
    num_groups: int = option(8, "shared-prefix: number of distinct system prompts")
    prompts_per_group: int = option(16, "shared-prefix: questions per system prompt")
    system_prompt_len: int = option(1024, "shared-prefix: tokens of each system prompt")
    question_len: int = option(64, "shared-prefix: tokens of each question")
    num_sessions: int = option(16, "multi-turn: conversations")
    turns: int = option(4, "multi-turn: user turns per conversation")
    think_time_s: float = option(0.0, "multi-turn: pause between a reply and the next turn")
    dataset_path: Path | None = option(None, "sharegpt: ShareGPT-format .json or .jsonl file")
    tokenizer: Path | None = option(None, "HF model dir whose tokenizer sets exact prompt lengths "
                                          "(default: 1 word ≈ 1 token)")
    concurrency: int | None = option(None, "closed loop: requests in flight (default "
                                           f"{DEFAULT_CLOSED_LOOP_CONCURRENCY}); with --request-rate: "
                                           "an upper bound (default none)")
    request_rate: float | None = option(None, "open loop: Poisson arrivals per second")
    burstiness: float = option(1.0, "open loop: gamma shape of inter-arrival times (1 = Poisson)")
    warmup: int = option(0, "requests sent (and not counted) before the measured run")
    seed: int = option(0, "makes prompts and arrival times reproducible")
    stream: bool = option(True, "stream responses (TTFT and inter-token latency are real)")
    ignore_eos: bool = option(False, "send vLLM's ignore_eos so every reply has --output-len tokens")
    temperature: float = option(0.0, "sampling temperature sent with each request")
    slo_ttft_ms: float | None = option(None, "goodput: a request is good only if TTFT <= this")
    slo_tpot_ms: float | None = option(None, "goodput: a request is good only if TPOT <= this")
    metrics_urls: tuple[str, ...] = option((), "replicas' /metrics URLs: prefix-cache hit rate "
                                               "over the run from the counters' deltas")
    output_json: Path | None = option(None, "write the report here as JSON")
    timeout_s: float = option(600.0, "per-request timeout")
    progress_interval_s: float = option(5.0, "seconds between progress lines when not on a TTY")

    def __post_init__(self) -> None:
        require(self.url.startswith(("http://", "https://")), f"--url must be http(s)://, got {self.url}")
        for name in ("num_prompts", "input_len", "output_len", "num_groups", "prompts_per_group",
                     "system_prompt_len", "question_len", "num_sessions", "turns"):
            require(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1")
        require(0.0 <= self.range_ratio < 1.0, "--range-ratio must be in [0, 1)")
        require(self.think_time_s >= 0, "--think-time-s must be >= 0")
        require(self.concurrency is None or self.concurrency >= 1, "--concurrency must be >= 1")
        require(self.request_rate is None or self.request_rate > 0, "--request-rate must be > 0")
        require(self.burstiness > 0, "--burstiness must be > 0")
        require(self.warmup >= 0, "--warmup must be >= 0")
        require(self.timeout_s > 0, "--timeout-s must be > 0")
        require(self.progress_interval_s > 0, "--progress-interval-s must be > 0")
        require(self.workload != "sharegpt" or self.dataset_path is not None,
                "--workload sharegpt needs --dataset-path")
        for slo in (self.slo_ttft_ms, self.slo_tpot_ms):
            require(slo is None or slo > 0, "SLO thresholds must be > 0")

    @property
    def max_in_flight(self) -> int | None:
        """Cap on concurrent requests: None means unbounded (open loop without --concurrency)."""
        if self.request_rate is None:
            return self.concurrency or DEFAULT_CLOSED_LOOP_CONCURRENCY
        return self.concurrency
