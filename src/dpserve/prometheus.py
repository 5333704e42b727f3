"""Prometheus text exposition pieces shared by the gateway and replica /metrics: the histogram."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence


class Histogram:
    """Cumulative-bucket histogram with Prometheus `le` semantics (value <= bound)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.bucket_counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect runs in C: this is on every request's path in the gateway.
        self.bucket_counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def sample_lines(self, name: str, labels: str = "") -> list[str]:
        """`name_bucket`, `name_sum`, `name_count` lines; `labels` like 'a="b"' go first."""
        prefix = f"{labels}," if labels else ""
        plain = f"{{{labels}}}" if labels else ""
        lines, cumulative = [], 0
        for bound, n in zip(self.bounds, self.bucket_counts, strict=False):
            cumulative += n
            lines.append(f'{name}_bucket{{{prefix}le="{bound!r}"}} {cumulative}')
        lines.append(f'{name}_bucket{{{prefix}le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum{plain} {self.sum!r}")
        lines.append(f"{name}_count{plain} {self.count}")
        return lines


def histogram_block(name: str, help_text: str, hist: Histogram, labels: str = "") -> list[str]:
    """HELP and TYPE lines followed by the histogram's samples."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} histogram", *hist.sample_lines(name, labels)]
