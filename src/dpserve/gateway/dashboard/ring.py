"""SeriesRing: the dashboard's history — fixed-capacity float columns, one row per sample, with seq numbers.

Memory is fixed per column (`capacity` doubles, 7.2 KB for 15 minutes at 1 s), whatever the request
rate; a column whose every slot is empty (a replica gone for the whole history) is dropped.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from dataclasses import dataclass

# A column is (scope, name): scope "" for the fleet, else the replica's label.
ColumnKey = tuple[str, str]
_EMPTY = math.nan


@dataclass(frozen=True)
class SeriesSlice:
    """Samples `first_seq`..`first_seq + len(times) - 1`, oldest first; None where a value was missing."""

    first_seq: int
    times: list[float]
    columns: dict[ColumnKey, list[float | None]]


class SeriesRing:
    """Appends one row per sample; keeps the last `capacity` rows. Sample seq numbers start at 1."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._times = array("d", [_EMPTY]) * capacity
        self._columns: dict[ColumnKey, array[float]] = {}
        self._count = 0

    @property
    def last_seq(self) -> int:
        """The newest sample's seq (0 before the first)."""
        return self._count

    @property
    def first_seq(self) -> int:
        """The oldest sample still held."""
        return max(1, self._count - self.capacity + 1)

    def __len__(self) -> int:
        return min(self._count, self.capacity)

    def keys(self) -> list[ColumnKey]:
        return list(self._columns)

    def append(self, t: float, values: Mapping[ColumnKey, float | None]) -> int:
        """Add one row (keys absent or None are missing in it); returns its seq."""
        slot = self._count % self.capacity
        if slot == 0 and self._count:
            self._drop_empty_columns()
        self._times[slot] = t
        for key, column in self._columns.items():
            value = values.get(key)
            column[slot] = _EMPTY if value is None else value
        for key, value in values.items():
            if key not in self._columns and value is not None:
                column = array("d", [_EMPTY]) * self.capacity
                column[slot] = value
                self._columns[key] = column
        self._count += 1
        return self._count

    def since(self, seq: int) -> SeriesSlice:
        """Every held sample after `seq` (all held ones when `seq` is older than the oldest)."""
        first = max(seq + 1, self.first_seq)
        slots = [(s - 1) % self.capacity for s in range(first, self._count + 1)]
        columns: dict[ColumnKey, list[float | None]] = {}
        for key, column in self._columns.items():
            values = [column[i] for i in slots]
            if any(v == v for v in values):  # NaN != NaN: skip columns empty in this slice
                columns[key] = [None if v != v else v for v in values]
        return SeriesSlice(first, [self._times[i] for i in slots], columns)

    def _drop_empty_columns(self) -> None:
        for key in [k for k, col in self._columns.items() if all(v != v for v in col)]:
            del self._columns[key]
