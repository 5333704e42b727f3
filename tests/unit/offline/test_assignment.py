"""Assigners: FIFO pulling, retries to untried replicas, prefix groups kept together."""

from __future__ import annotations

from dpserve.offline.assignment import FifoAssigner, WorkItem
from dpserve.offline.reader import RequestRef

BOTH = frozenset({"a", "b"})


def _ref(line_no: int, key: bytes | None = None) -> RequestRef:
    return RequestRef(line_no, 0, 0, f"id-{line_no}", key)


def _always(_: int) -> bool:
    return True


def test_fifo_hands_out_input_order_to_whoever_asks() -> None:
    a = FifoAssigner([_ref(i) for i in range(1, 5)])
    got = [a.next_for(r, BOTH, _always) for r in ("a", "b", "b", "a")]
    assert [g.ref.line_no for g in got if g] == [1, 2, 3, 4]
    assert a.next_for("a", BOTH, _always) is None and a.num_queued == 0


def test_fifo_respects_admission_window() -> None:
    a = FifoAssigner([_ref(i) for i in range(1, 4)])
    assert a.next_for("a", BOTH, lambda line: line < 2) is not None
    assert a.next_for("a", BOTH, lambda line: line < 2) is None
    assert a.num_queued == 2


def test_retry_goes_first_and_to_an_untried_replica() -> None:
    a = FifoAssigner([_ref(1), _ref(2)])
    item = a.next_for("a", BOTH, _always)
    assert item is not None
    a.requeue(item.failed_on("a", "boom"))
    nxt = a.next_for("a", BOTH, _always)
    assert nxt is not None and nxt.ref.line_no == 2  # "a" already tried line 1
    retry = a.next_for("b", BOTH, _always)
    assert retry is not None and retry.ref.line_no == 1 and retry.attempts == 1


def test_retry_may_reuse_a_replica_when_no_untried_one_is_healthy() -> None:
    a = FifoAssigner([_ref(1)])
    item = a.next_for("a", BOTH, _always)
    assert item is not None
    a.requeue(item.failed_on("a", "boom"))
    assert a.next_for("a", BOTH, _always) is None  # "b" is up and has not tried it
    again = a.next_for("a", frozenset({"a"}), _always)  # "b" went down
    assert again is not None and again.tried == frozenset({"a"})


def test_failed_on_accumulates() -> None:
    item = WorkItem(_ref(1)).failed_on("a", "x").failed_on("b", "y")
    assert item.attempts == 2 and item.tried == BOTH and item.last_error == "y"
