"""The bench report: results → the JSON of the interface contract (plus extras) and its text table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dpserve.bench.conversation import RequestResult
from dpserve.bench.stats import summarize_ms

LATENCY_KEYS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")
NO_WORKER = "(no header)"
MAX_ERROR_KINDS = 5


@dataclass(frozen=True)
class SLO:
    """Goodput thresholds; None means that metric is not constrained."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    @property
    def is_set(self) -> bool:
        return self.ttft_ms is not None or self.tpot_ms is not None

    def is_met(self, r: RequestResult) -> bool:
        if not r.ok:
            return False
        if self.ttft_ms is not None and (r.ttft_s is None or r.ttft_s * 1000 > self.ttft_ms):
            return False
        tpot = r.tpot_s
        return self.tpot_ms is None or tpot is None or tpot * 1000 <= self.tpot_ms


def latency_summary(done: Sequence[RequestResult]) -> dict[str, dict[str, float | None]]:
    return {
        "ttft_ms": summarize_ms([r.ttft_s for r in done if r.ttft_s is not None]),
        "tpot_ms": summarize_ms([t for r in done if (t := r.tpot_s) is not None]),
        "itl_ms": summarize_ms([gap for r in done for gap in r.itl_s]),
        "e2e_ms": summarize_ms([r.e2e_s for r in done if r.e2e_s is not None]),
    }


def worker_share(done: Sequence[RequestResult]) -> tuple[dict[str, int], dict[str, float]]:
    """Completed requests per `x-dpserve-worker` value, as counts and fractions (sorted by id)."""
    counts = Counter(r.worker or NO_WORKER for r in done)
    total = max(1, len(done))
    ordered = dict(sorted(counts.items()))
    return ordered, {w: n / total for w, n in ordered.items()}


def build_report(results: Sequence[RequestResult], duration_s: float, *, slo: SLO = SLO(),
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report dict; `extra` (config echo, prefix-cache stats, ...) is merged in last."""
    done = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    duration = max(duration_s, 1e-9)
    output_tokens = sum(r.output_tokens for r in done)
    counts, shares = worker_share(done)
    report: dict[str, Any] = {
        "completed": len(done),
        "failed": len(failed),
        "duration_s": duration_s,
        "request_throughput": len(done) / duration,
        "output_throughput": output_tokens / duration,
        "total_output_tokens": output_tokens,
        "total_input_tokens": sum(r.prompt_tokens or 0 for r in done),
        **latency_summary(done),
        "worker_requests": counts,
        "worker_share": shares,
        "errors": dict(Counter(r.error or "" for r in failed).most_common(MAX_ERROR_KINDS)),
    }
    if slo.is_set:
        good = sum(1 for r in done if slo.is_met(r))
        report["goodput"] = {"slo_ttft_ms": slo.ttft_ms, "slo_tpot_ms": slo.tpot_ms,
                             "good_requests": good, "request_goodput": good / duration}
    report.update(extra or {})
    return report


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_table(report: dict[str, Any]) -> str:
    """The report as aligned text lines, vLLM-bench style."""
    width = 50
    rows: list[tuple[str, Any]] = [
        ("Successful requests", report["completed"]), ("Failed requests", report["failed"]),
        ("Duration (s)", report["duration_s"]), ("Output tokens", report["total_output_tokens"]),
        ("Request throughput (req/s)", report["request_throughput"]),
        ("Output throughput (tok/s)", report["output_throughput"]),
    ]
    if "goodput" in report:
        rows.append(("Request goodput (req/s)", report["goodput"]["request_goodput"]))
    if report.get("prefix_cache_hit_rate") is not None:
        rows.append(("Prefix cache hit rate", report["prefix_cache_hit_rate"]))
    if report.get("interrupted"):
        rows.append(("Interrupted", "yes (partial results)"))
    lines = [" Serving Benchmark Result ".center(width, "=")]
    lines += [f"{name + ':':<36}{_fmt(value):>14}" for name, value in rows]
    for key in LATENCY_KEYS:
        lines.append(f" {key} ".center(width, "-"))
        lines += [f"{stat + ':':<36}{_fmt(v):>14}" for stat, v in report[key].items()]
    lines.append(" Requests per worker ".center(width, "-"))
    lines += [f"{worker + ':':<36}{n:>8} {report['worker_share'][worker]:>5.1%}"
              for worker, n in report["worker_requests"].items()]
    if report.get("replica_request_share"):
        lines.append(" Share per replica (/metrics) ".center(width, "-"))
        lines += [f"{url + ':':<36}{'-' if share is None else format(share, '.1%'):>14}"
                  for url, share in report["replica_request_share"].items()]
    for message, count in report["errors"].items():
        lines.append(f"error x{count}: {message}")
    lines.append("=" * width)
    return "\n".join(lines)
