"""Reduce bench reports to the experiment's columns and render them as a markdown table."""

from __future__ import annotations

from typing import Any


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """One row: scenario, router, throughput, TTFT p50/p99, hit rate, per-replica share (sorted)."""
    run = report["run"]
    # From the replicas' own counters, so routers that do not tag responses compare too.
    shares = sorted((s or 0.0 for s in report.get("replica_request_share", {}).values()), reverse=True)
    return {
        "scenario": run["scenario"], "router": run["router"],
        "completed": report["completed"], "failed": report["failed"],
        "output_throughput": report["output_throughput"],
        "ttft_p50_ms": report["ttft_ms"]["p50"], "ttft_p99_ms": report["ttft_ms"]["p99"],
        "prefix_cache_hit_rate": report.get("prefix_cache_hit_rate"),
        "replica_share": shares, "duration_s": report["duration_s"],
    }


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| workload | router | done/failed | output tok/s | TTFT p50 ms | TTFT p99 ms "
             "| prefix hit rate | replica share (sorted, %) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        share = " ".join(f"{100 * s:.0f}" for s in r["replica_share"])
        lines.append(f"| {r['scenario']} | {r['router']} | {r['completed']}/{r['failed']} | "
                     f"{_num(r['output_throughput'], '.0f')} | {_num(r['ttft_p50_ms'], '.0f')} | "
                     f"{_num(r['ttft_p99_ms'], '.0f')} | {_num(r['prefix_cache_hit_rate'], '.1%')} | "
                     f"{share} |")
    return "\n".join(lines) + "\n"
