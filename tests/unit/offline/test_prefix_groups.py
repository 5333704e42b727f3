"""PrefixGroupAssigner: leader first, then the group back to back on its replica; steals at the end."""

from __future__ import annotations

from dpserve.offline.assignment import WorkItem
from dpserve.offline.prefix_groups import PrefixGroupAssigner
from dpserve.offline.reader import RequestRef

BOTH = frozenset({"a", "b"})


def _ref(line_no: int, key: bytes | None = None) -> RequestRef:
    return RequestRef(line_no, 0, 0, f"id-{line_no}", key)


def _next(a: PrefixGroupAssigner, replica: str) -> int | None:
    item = a.next_for(replica, BOTH, lambda _: True)
    return item.ref.line_no if item else None


def _settle(a: PrefixGroupAssigner, line_no: int) -> None:
    a.on_settled(WorkItem(_ref(line_no)))


def test_leader_goes_alone_then_the_group_follows_on_the_same_replica() -> None:
    a = PrefixGroupAssigner([_ref(1, b"p"), _ref(2, b"q"), _ref(3, b"p"), _ref(4, b"p"), _ref(5)])
    assert _next(a, "a") == 1  # leader of the largest group (p)
    assert [_next(a, "a"), _next(a, "a")] == [2, 5]  # p is warming; q (one member) is loose work
    assert _next(a, "a") is None  # nothing else to do until the leader is back
    assert _next(a, "b") is None  # and the group is not stolen while it warms
    _settle(a, 1)
    assert [_next(a, "a"), _next(a, "a")] == [3, 4]
    assert a.num_queued == 0


def test_each_replica_opens_its_own_group() -> None:
    a = PrefixGroupAssigner([_ref(i, b"p" if i % 2 else b"q") for i in range(1, 9)])
    assert _next(a, "a") == 1 and _next(a, "b") == 2
    _settle(a, 1)
    _settle(a, 2)
    assert [_next(a, "a") for _ in range(3)] == [3, 5, 7]
    assert [_next(a, "b") for _ in range(3)] == [4, 6, 8]
    assert a.num_queued == 0


def test_idle_replica_steals_from_the_tail_of_a_warm_group_only() -> None:
    a = PrefixGroupAssigner([_ref(i, b"g") for i in range(1, 6)])
    assert _next(a, "a") == 1
    assert _next(a, "b") is None  # the only group is still warming on "a"
    _settle(a, 1)
    assert _next(a, "b") == 5
    assert [_next(a, "a") for _ in range(3)] == [2, 3, 4]
    assert a.num_queued == 0


def test_singletons_and_keyless_requests_keep_input_order() -> None:
    a = PrefixGroupAssigner([_ref(1, b"solo"), _ref(2), _ref(3, b"g"), _ref(4, b"g")])
    assert [_next(a, "a"), _next(a, "a"), _next(a, "a")] == [3, 1, 2]


def test_failed_leader_releases_its_group_and_is_retried_first() -> None:
    a = PrefixGroupAssigner([_ref(1, b"g"), _ref(2, b"g")])
    assert _next(a, "a") == 1
    failed = WorkItem(_ref(1, b"g")).failed_on("a", "boom")
    a.requeue(failed)
    a.on_settled(WorkItem(_ref(1, b"g")))
    assert _next(a, "b") == 1  # the retry, on the replica that has not tried it
    assert _next(a, "a") == 2
