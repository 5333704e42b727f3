from dpserve.gateway.admission.wait_queue import WaitQueue


def test_same_priority_served_in_arrival_order() -> None:
    q: WaitQueue[str] = WaitQueue()
    for name in ("a", "b", "c"):
        q.push(name)
    assert [q.pop(), q.pop(), q.pop(), q.pop()] == ["a", "b", "c", None]


def test_lower_priority_value_first_then_arrival() -> None:
    q: WaitQueue[str] = WaitQueue()
    q.push("late-normal", 0)
    q.push("urgent", -1)
    q.push("background", 5)
    q.push("normal-2", 0)
    assert [q.pop() for _ in range(4)] == ["urgent", "late-normal", "normal-2", "background"]


def test_removed_entries_are_skipped_and_not_counted() -> None:
    q: WaitQueue[str] = WaitQueue()
    q.push("a")
    b = q.push("b")
    c = q.push("c")
    assert q.remove(b) is True
    assert q.remove(b) is False
    assert len(q) == 2
    assert q.ahead_of(c) == 1
    assert q.pop() == "a"
    assert q.pop() == "c"
    assert len(q) == 0
    assert q.remove(c) is False
