"""SeriesRing: rows by seq, slices after a seq, wrap-around, missing values, dropped empty columns."""

from __future__ import annotations

import pytest

from dpserve.gateway.dashboard.ring import SeriesRing

A, B = ("", "a"), ("r0", "b")


def test_since_returns_the_rows_after_a_seq_with_gaps_as_none() -> None:
    ring = SeriesRing(4)
    assert ring.append(10.0, {A: 1.0}) == 1
    assert ring.append(11.0, {A: 2.0, B: 5.0}) == 2
    assert ring.append(12.0, {B: None}) == 3
    whole = ring.since(0)
    assert (whole.first_seq, whole.times) == (1, [10.0, 11.0, 12.0])
    assert whole.columns == {A: [1.0, 2.0, None], B: [None, 5.0, None]}
    tail = ring.since(2)
    assert (tail.first_seq, tail.times, tail.columns) == (3, [12.0], {})  # all-empty columns left out
    assert ring.since(3).times == []


def test_wraps_around_keeping_the_last_capacity_rows() -> None:
    ring = SeriesRing(3)
    for i in range(1, 8):
        ring.append(float(i), {A: float(i)})
    assert (ring.first_seq, ring.last_seq, len(ring)) == (5, 7, 3)
    old = ring.since(1)  # older than the oldest held: everything held
    assert (old.first_seq, old.times, old.columns[A]) == (5, [5.0, 6.0, 7.0], [5.0, 6.0, 7.0])
    assert ring.since(6).columns[A] == [7.0]


def test_a_column_empty_for_the_whole_history_is_dropped() -> None:
    ring = SeriesRing(2)
    ring.append(1.0, {A: 1.0, B: 1.0})
    for t in (2.0, 3.0, 4.0, 5.0):
        ring.append(t, {A: t})
    assert ring.keys() == [A]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SeriesRing(0)
