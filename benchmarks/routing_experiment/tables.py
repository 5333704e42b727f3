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


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (scenario, router), the repeat with the median output throughput, plus the range seen."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["router"]), []).append(row)
    out = []
    for runs in groups.values():
        ordered = sorted(runs, key=lambda r: r["output_throughput"])
        out.append({**ordered[len(ordered) // 2], "repeats": len(runs),
                    "throughput_range": (ordered[0]["output_throughput"], ordered[-1]["output_throughput"])})
    return out


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _range(row: dict[str, Any]) -> str:
    low, high = row.get("throughput_range", (row["output_throughput"],) * 2)
    return f"{low:.0f}-{high:.0f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| workload | router | done/failed | output tok/s (range) | TTFT p50 ms | TTFT p99 ms "
             "| prefix hit rate | replica share (sorted, %) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        share = " ".join(f"{100 * s:.0f}" for s in r["replica_share"])
        lines.append(f"| {r['scenario']} | {r['router']} | {r['completed']}/{r['failed']} | "
                     f"{_num(r['output_throughput'], '.0f')} ({_range(r)}) | "
                     f"{_num(r['ttft_p50_ms'], '.0f')} | "
                     f"{_num(r['ttft_p99_ms'], '.0f')} | {_num(r['prefix_cache_hit_rate'], '.1%')} | "
                     f"{share} |")
    return "\n".join(lines) + "\n"
