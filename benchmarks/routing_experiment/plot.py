"""The experiment's PNG: per workload, output throughput, TTFT p99 and prefix-cache hit rate per router."""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRICS = (("output_throughput", "output tok/s"), ("ttft_p99_ms", "TTFT p99 (ms)"),
           ("prefix_cache_hit_rate", "prefix-cache hit rate"))


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    fig, axes = plt.subplots(len(scenarios), len(METRICS), figsize=(15, 4 * len(scenarios)), squeeze=False)
    for i, scenario in enumerate(scenarios):
        runs = [r for r in rows if r["scenario"] == scenario]
        names = [r["router"] for r in runs]
        for j, (key, label) in enumerate(METRICS):
            ax = axes[i][j]
            values = [r[key] or 0.0 for r in runs]
            colors = ["tab:orange" if "sglang" in n else "tab:blue" for n in names]
            ax.barh(names, values, color=colors)
            ax.set_title(f"{scenario}: {label}")
            ax.invert_yaxis()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
