#!/usr/bin/env python3
"""oneDNN weight packing: time of all the bundled model's linears for one step, per batch-size hint.

The shapes are SmolLM2-135M's (30 layers of fused q/k/v 960x576, o 576x576, gate/up 3072x576,
down 576x1536, plus the 49152x576 lm_head), with 30 distinct random weights per layer shape so they
stream from memory as in the model. Prints, per hint and batch size M, the best of 8 passes; also the
fixed cost of one `mkldnn::_linear_pointwise` call on a tiny matrix.

    .venv/bin/python benchmarks/engine_vs_vllm/linear_packing.py --threads 1 2 --hints 1 4 16 32 64
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536), (49152, 576)]
NUM_LAYERS = 30


def best_s(fn: Callable[[], object], reps: int = 8) -> float:
    fn()
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def step_ms(weights: dict[tuple[int, int], list[torch.Tensor]], hint: int, m: int) -> float:
    linear = torch.ops.mkldnn._linear_pointwise
    total = 0.0
    for shape, ws in weights.items():
        packed = [torch.ops.mkldnn._reorder_linear_weight(w, hint) for w in ws]
        x = torch.randn(m, shape[1])
        total += best_s(lambda: [linear(x, p, None, "none", [], "") for p in packed])  # noqa: B023
    return total * 1e3


def call_overhead_us() -> float:
    w = torch.ops.mkldnn._reorder_linear_weight(torch.randn(8, 8), 32)
    x = torch.randn(1, 8)
    n = 20000
    start = time.perf_counter()
    for _ in range(n):
        torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hints", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    weights = {s: [torch.randn(*s) for _ in range(1 if s[0] == 49152 else NUM_LAYERS)] for s in SHAPES}
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"threads {threads}: one tiny linear call costs {call_overhead_us():.1f} µs")
        for hint in args.hints:
            cells = "  ".join(f"M={m}: {step_ms(weights, hint, m):6.2f} ms" for m in args.batch_sizes)
            print(f"  hint {hint:>3}: {cells}")


if __name__ == "__main__":
    main()
