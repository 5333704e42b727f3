"""Reduce bench reports to the experiment's columns, medians over repeats, and a markdown table."""

from __future__ import annotations

import statistics
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


MEDIANS = ("output_throughput", "ttft_p50_ms", "ttft_p99_ms", "prefix_cache_hit_rate")


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (scenario, router): the median of each metric over the repeats and its range (min, max)
    under `KEY_range`; the other columns (replica share) from the run of median throughput."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["router"]), []).append(row)
    out = []
    for runs in groups.values():
        ordered = sorted(runs, key=lambda r: r["output_throughput"])
        row = {**ordered[len(ordered) // 2], "repeats": len(runs),
               "completed": sum(r["completed"] for r in runs), "failed": sum(r["failed"] for r in runs)}
        for key in MEDIANS:
            values = [r[key] for r in runs if r[key] is not None]
            row[key] = statistics.median(values) if values else None
            row[f"{key}_range"] = (min(values), max(values)) if values else None
        out.append(row)
    return out


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    """`median (min-max)` when there were several repeats, else the one value."""
    span = row.get(f"{key}_range")
    if row.get("repeats", 1) < 2 or span is None:
        return _num(row[key], fmt)
    return f"{_num(row[key], fmt)} ({_num(span[0], fmt)}-{_num(span[1], fmt)})"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| workload | router | runs | done/failed | output tok/s | TTFT p50 ms | TTFT p99 ms "
             "| prefix hit rate | replica share (sorted, %) |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        share = " ".join(f"{100 * s:.0f}" for s in r["replica_share"])
        lines.append(f"| {r['scenario']} | {r['router']} | {r.get('repeats', 1)} | "
                     f"{r['completed']}/{r['failed']} | {_cell(r, 'output_throughput', '.0f')} | "
                     f"{_cell(r, 'ttft_p50_ms', '.0f')} | "
                     f"{_cell(r, 'ttft_p99_ms', '.0f')} | {_cell(r, 'prefix_cache_hit_rate', '.1%')} | "
                     f"{share} |")
    return "\n".join(lines) + "\n"
