"""Reading Prometheus text exposition: samples summed over label sets, histogram buckets, quantiles.

For low-rate readers (the dashboard, `dpserve plan --diagnose`, `dpserve bench`): every sample is
parsed. The gateway's load poller, which runs every poll interval, keeps its own narrower parser.
"""

from __future__ import annotations

import functools
import math
import re
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
    if only is not None:
        return _parse_only(text, frozenset(only))
    values: dict[str, float] = {}
    per_le: dict[str, dict[float, float]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name, labels, value = _split_sample(line)
        if name is None or value is None:
            continue
        le = _label(labels, "le") if labels is not None and name.endswith("_bucket") else None
        _add(values, per_le, name, le, value)
    return _exposition(values, per_le)


def _add(values: dict[str, float], per_le: dict[str, dict[float, float]], name: str, le: float | None,
         value: float) -> None:
    if le is None:
        values[name] = values.get(name, 0.0) + value
        return
    by_le = per_le.setdefault(name[: -len("_bucket")], {})
    by_le[le] = by_le.get(le, 0.0) + value


def _exposition(values: dict[str, float], per_le: dict[str, dict[float, float]]) -> Exposition:
    return Exposition(values, {base: tuple(sorted(by_le.items())) for base, by_le in per_le.items()})


@functools.lru_cache(maxsize=16)
def _only_pattern(only: frozenset[str]) -> re.Pattern[str]:
    """One regex for the wanted series' sample lines: name (a histogram's with `_bucket`), its `le`
    label if any, and the value. Longest names first, so one that prefixes another is tried last."""
    names = "|".join(re.escape(n) for n in sorted(only, key=len, reverse=True))
    # The label set is taken whole (one greedy scan to the line's last `}`) and `le` found in it
    # apart (`_label`, as the full parse does): matched in the same pattern, every `le="…"` of a
    # line without a `}` was followed by a scan to the line's end — quadratic: a hostile replica's
    # 8 MiB line would have held the dashboard's sampler for hours.
    return re.compile(rf'^((?:{names})(?:_bucket)?)(?:\{{([^\n]*)\}})?[ \t]+(\S+)', re.MULTILINE)


def _parse_only(text: str, only: frozenset[str]) -> Exposition:
    """`parse_exposition(text, only)`: the dashboard's per-tick parse. The regex scans the text in C
    and skips unwanted lines without a Python step each: ~1.5× faster than the line loop on a
    vLLM-shaped scrape (~95 µs against ~140 µs), which is most of the dashboard's sample cost."""
    values: dict[str, float] = {}
    per_le: dict[str, dict[float, float]] = {}
    for name, labels, value_text in _only_pattern(only).findall(text):
        try:
            value = float(value_text)
        except ValueError:
            continue
        _add(values, per_le, name, _label(labels, "le") if name.endswith("_bucket") else None, value)
    return _exposition(values, per_le)


def _number(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


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
    while start > 0 and labels[start - 1] not in ", ":  # inside another name (`scale="`): the next
        start = labels.find(marker, start + 1)
    if start < 0:
        return None
    start += len(marker)
    end = labels.find('"', start)
    return _number(labels[start:end]) if end >= 0 else None


def rate(before: float | None, after: float | None, seconds: float) -> float:
    """Per-second increase of a counter; a reset (after < before) counts from zero."""
    if after is None or seconds <= 0:
        return 0.0
    base = before if before is not None and before <= after else 0.0
    return (after - base) / seconds


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
