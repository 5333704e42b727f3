"""docs/img/plan-70b-4xh100.png: predicted throughput and TTFT p99 vs concurrency, one line per layout.

The Harbor case of docs/choosing-dp-tp-pp.md: Llama-3.1-70B in FP8 on 4 × H100, chat-length
requests (256 prompt + 256 output tokens), closed loop. Needs the `plots` extra:
    pip install -e '.[plots]' && python benchmarks/plan/plot_throughput.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from dpserve.planner.catalog import resolve_arch
from dpserve.planner.hardware import get_gpu
from dpserve.planner.layouts import enumerate_layouts
from dpserve.planner.predict import Setting, predict
from dpserve.planner.workload import Workload

CONCURRENCY = (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024)
OUT = Path(__file__).resolve().parents[2] / "docs" / "img" / "plan-70b-4xh100.png"


def curves() -> dict[str, list[tuple[int, float, float]]]:
    """layout label → [(concurrency, fleet output tok/s, TTFT p99 ms)] for every layout that fits."""
    arch, gpu = resolve_arch("llama-3.1-70b"), get_gpu("H100-80GB")
    out: dict[str, list[tuple[int, float, float]]] = {}
    for layout in enumerate_layouts(4, 4, arch):
        for c in CONCURRENCY:
            p = predict(Setting(arch, gpu, 4, "fp8", "bf16", Workload(256, 256, concurrency=c)), layout)
            if p.fits and p.load is not None:
                out.setdefault(layout.label, []).append((c, p.output_tok_s, p.load.ttft_p99_s * 1e3))
    return out


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    for label, points in curves().items():
        xs = [c for c, _, _ in points]
        left.plot(xs, [t for _, t, _ in points], marker="o", ms=3, label=label)
        right.plot(xs, [ttft for _, _, ttft in points], marker="o", ms=3, label=label)
    for ax, title in ((left, "predicted output tokens/s"), (right, "predicted TTFT p99 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (requests in flight over the fleet)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    fig.suptitle("dpserve plan: Llama-3.1-70B FP8 on 4 × H100-80GB, 256 + 256 tokens")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
