"""The replica's /metrics: vLLM-named counters, gauges and histograms in Prometheus text format.

Gauges and prefix-cache counters come from `EngineClient.stats()` at scrape time; token counters
and latency histograms are recorded by the server as requests finish. Bucket bounds are vLLM's.
"""

from __future__ import annotations

from dpserve.prometheus import Histogram, histogram_block
from dpserve.serving.engine_client import EngineStats

TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                  7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
E2E_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TPOT_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                  10.0, 20.0, 40.0, 80.0)
FINISH_REASONS = ("stop", "length", "abort")
MAX_NUM_SEQS = "dpserve:max_num_seqs"  # ours: vLLM does not publish its --max-num-seqs


class ReplicaMetrics:
    """Everything /metrics reports for one served model."""

    def __init__(self, model_name: str) -> None:
        self._labels = f'model_name="{_escape(model_name)}"'
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.request_success = dict.fromkeys(FINISH_REASONS, 0)
        self.ttft = Histogram(TTFT_BUCKETS_S)
        self.e2e = Histogram(E2E_BUCKETS_S)
        self.tpot = Histogram(TPOT_BUCKETS_S)

    def record_first_token(self, ttft_s: float) -> None:
        self.ttft.observe(ttft_s)

    def record_inter_token(self, interval_s: float, num_tokens: int) -> None:
        """`num_tokens` arrived together `interval_s` after the previous ones (vLLM V1 semantics)."""
        for _ in range(num_tokens):
            self.tpot.observe(interval_s / num_tokens)

    def record_finished(self, *, num_prompt_tokens: int, num_generated_tokens: int,
                        finish_reason: str, e2e_s: float) -> None:
        self.prompt_tokens += num_prompt_tokens
        self.generation_tokens += num_generated_tokens
        self.request_success[finish_reason] = self.request_success.get(finish_reason, 0) + 1
        self.e2e.observe(e2e_s)

    def render(self, stats: EngineStats) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        lb = self._labels
        lines: list[str] = []
        _gauge(lines, "vllm:num_requests_running", "Requests in the running batch.", lb, stats.num_running)
        _gauge(lines, "vllm:num_requests_waiting", "Requests waiting to be scheduled.", lb,
               stats.num_waiting)
        _gauge(lines, "vllm:kv_cache_usage_perc", "KV-cache usage; 1 means 100 percent.", lb,
               stats.kv_cache_usage)
        _counter(lines, "vllm:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
                 lb, stats.prefix_cache_queries)
        _counter(lines, "vllm:prefix_cache_hits_total", "Prompt tokens found in the prefix cache.", lb,
                 stats.prefix_cache_hits)
        _counter(lines, "vllm:num_preemptions_total", "Preemptions.", lb, stats.num_preemptions)
        if stats.max_num_seqs is not None:  # lets readers tell "at max-num-seqs" (diagnosis.py)
            _gauge(lines, MAX_NUM_SEQS, "The scheduler's cap on running requests.", lb, stats.max_num_seqs)
        _counter(lines, "vllm:prompt_tokens_total", "Prefill tokens processed.", lb, self.prompt_tokens)
        _counter(lines, "vllm:generation_tokens_total", "Generation tokens processed.", lb,
                 self.generation_tokens)
        lines.append("# HELP vllm:request_success_total Finished requests by finish reason.")
        lines.append("# TYPE vllm:request_success_total counter")
        for reason, n in self.request_success.items():
            lines.append(f'vllm:request_success_total{{{lb},finished_reason="{reason}"}} {n}')
        _histogram(lines, "vllm:time_to_first_token_seconds", "Time to first token in seconds.", lb,
                   self.ttft)
        _histogram(lines, "vllm:e2e_request_latency_seconds", "End-to-end request latency in seconds.",
                   lb, self.e2e)
        _histogram(lines, "vllm:time_per_output_token_seconds", "Time between output tokens in seconds.",
                   lb, self.tpot)
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _gauge(lines: list[str], name: str, help_text: str, labels: str, value: float) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{{{labels}}} {_number(value)}"]


def _counter(lines: list[str], name: str, help_text: str, labels: str, value: float) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name}{{{labels}}} {_number(value)}"]


def _histogram(lines: list[str], name: str, help_text: str, labels: str, hist: Histogram) -> None:
    lines += histogram_block(name, help_text, hist, labels)
