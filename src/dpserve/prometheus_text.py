"""Reading Prometheus text exposition: samples summed over label sets, histogram buckets, quantiles.

For low-rate readers (the dashboard, `dpserve plan --diagnose`, `dpserve bench`): every sample is
parsed. The gateway's load poller, which runs every poll interval, keeps its own narrower parser.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

Buckets = tuple[tuple[float, float], ...]  # (upper bound `le`, cumulative count), ascending, +Inf last


@dataclass(frozen=True)
class Exposition:
    """One scrape: every series summed over its label sets; histogram buckets summed per `le`."""

    values: dict[str, float]
    buckets: dict[str, Buckets]

    def get(self, name: str) -> float | None:
        return self.values.get(name)


def parse_exposition(text: str, only: Collection[str] | None = None) -> Exposition:
    """Parse Prometheus text format; malformed lines are skipped (a scrape must never raise).

    `only`: keep just these series (a histogram by its name without `_bucket`), skipping the rest
    before any number is parsed — for readers that scrape often and want a few series.
    """
    values: dict[str, float] = {}
    per_le: dict[str, dict[float, float]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        if only is not None and not _wanted(line, only):
            continue
        name, labels, value = _split_sample(line)
        if name is None or value is None:
            continue
        if name.endswith("_bucket") and labels is not None:
            le = _label(labels, "le")
            if le is not None:
                base = name[: -len("_bucket")]
                by_le = per_le.setdefault(base, {})
                by_le[le] = by_le.get(le, 0.0) + value
                continue
        values[name] = values.get(name, 0.0) + value
    buckets = {base: tuple(sorted(by_le.items())) for base, by_le in per_le.items()}
    return Exposition(values, buckets)


def _wanted(line: str, only: Collection[str]) -> bool:
    end = len(line)
    for sep in ("{", " "):
        at = line.find(sep)
        if 0 <= at < end:
            end = at
    name = line[:end]
    return name in only or (name.endswith("_bucket") and name[: -len("_bucket")] in only)


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus' `histogram_quantile`: linear interpolation inside the bucket holding rank q·N.

    None when the histogram is empty. A rank in the +Inf bucket answers the largest finite bound
    (as Prometheus does).
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            in_bucket = count - lower_count
            if in_bucket <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = bound, count
    return lower_bound


def bucket_delta(before: Buckets | None, after: Buckets | None) -> Buckets:
    """Observations between two scrapes of one histogram (bounds present in both; counter resets → after)."""
    if not after:
        return ()
    if not before:
        return after
    old = dict(before)
    delta = tuple((le, count - old.get(le, 0.0)) for le, count in after)
    if any(count < 0 for _, count in delta):  # the replica restarted: its counters began again
        return after
    return delta


def _split_sample(line: str) -> tuple[str | None, str | None, float | None]:
    brace = line.find("{")
    space = line.find(" ")
    if 0 <= brace < space or (brace >= 0 and space < 0):
        close = line.rfind("}")
        if close < brace:
            return None, None, None
        name, labels, rest = line[:brace], line[brace + 1:close], line[close + 1:]
    else:
        name, _, rest = line.partition(" ")
        labels = None
    parts = rest.split()
    if not name or not parts:
        return None, None, None
    try:
        return name, labels, float(parts[0])
    except ValueError:
        return None, None, None


def _label(labels: str, key: str) -> float | None:
    """The numeric value of label `key` (for `le`), or None."""
    marker = f'{key}="'
    start = labels.find(marker)
    if start < 0 or (start > 0 and labels[start - 1] not in ", "):
        return None
    start += len(marker)
    end = labels.find('"', start)
    try:
        return float(labels[start:end])
    except ValueError:
        return None


def rate(before: float | None, after: float | None, seconds: float) -> float:
    """Per-second increase of a counter; a reset (after < before) counts from zero."""
    if after is None or seconds <= 0:
        return 0.0
    base = before if before is not None and before <= after else 0.0
    return (after - base) / seconds


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
