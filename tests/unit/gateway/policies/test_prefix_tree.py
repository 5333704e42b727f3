"""PrefixTree: longest match among candidates, shared char budget with LRU eviction, worker removal."""

from __future__ import annotations

from dpserve.gateway.policies.prefix_tree import Match, PrefixTree


def test_longest_match_picks_the_deepest_holder() -> None:
    tree = PrefixTree(1000)
    tree.insert("hello world", "a")
    tree.insert("hello there", "b")
    assert tree.match("hello world again", {"a", "b"}) == Match(("a",), 11)
    assert tree.match("hello there!", {"a", "b"}) == Match(("b",), 11)
    assert tree.match("hello wonder", {"a", "b"}) == Match(("a",), 8)
    assert tree.match("xyz", {"a", "b"}) == Match((), 0)


def test_match_only_counts_candidates() -> None:
    tree = PrefixTree(1000)
    tree.insert("abcdef", "a")
    tree.insert("abc", "b")
    assert tree.match("abcdef", {"b"}) == Match(("b",), 3)
    assert tree.match("abcdef", {"c"}) == Match((), 0)


def test_every_holder_of_the_deepest_match_is_returned() -> None:
    tree = PrefixTree(1000)
    tree.insert("prefix-x", "a")
    tree.insert("prefix-y", "b")
    tree.insert("prefix-x", "c")
    assert tree.match("prefix-x!", {"a", "b", "c"}) == Match(("a", "c"), 8)
    assert tree.match("prefix-z", {"a", "b", "c"}) == Match(("a", "b", "c"), 7)
    assert tree.match("prefix-x", {"b"}).worker_id == "b"


def test_shared_prefix_is_stored_once() -> None:
    tree = PrefixTree(1000)
    tree.insert("abcdef", "a")
    tree.insert("abcdef", "b")
    tree.insert("abcxyz", "c")
    assert tree.size_chars == len("abc") + len("def") + len("xyz")


def test_budget_evicts_least_recently_used_first() -> None:
    tree = PrefixTree(30)
    tree.insert("a" * 10, "w")
    tree.insert("b" * 10, "w")
    tree.match("a" * 10, {"w"})  # matching does not refresh; inserting does
    tree.insert("a" * 10, "w")
    tree.insert("c" * 15, "w")  # 35 chars > 30 → evict down to 27: drops b (oldest)
    assert tree.size_chars <= 30
    assert tree.match("b" * 10, {"w"}).matched_chars == 0
    assert tree.match("a" * 10, {"w"}).matched_chars == 10
    assert tree.match("c" * 15, {"w"}).matched_chars == 15


def test_size_never_exceeds_budget_under_many_inserts() -> None:
    tree = PrefixTree(500)
    for i in range(2000):
        tree.insert(f"system prompt {i % 7} user question number {i}", f"w{i % 4}")
        assert tree.size_chars <= 500


def test_remove_worker_forgets_it_and_frees_its_chars() -> None:
    tree = PrefixTree(1000)
    tree.insert("shared prefix then a", "a")
    tree.insert("shared prefix then b", "b")
    tree.remove_worker("a")
    assert tree.match("shared prefix then a", {"a", "b"}) == Match(("b",), len("shared prefix then "))
    assert tree.size_chars == len("shared prefix then b")
    tree.remove_worker("b")
    assert tree.size_chars == 0


def test_worker_chars_follow_inserts_splits_eviction_and_removal() -> None:
    tree = PrefixTree(1000)
    tree.insert("abcdef", "a")
    tree.insert("abcxyz", "b")  # splits "abcdef": b holds "abc" + "xyz"
    tree.insert("abcdef", "a")  # already held: no double count
    assert (tree.worker_chars("a"), tree.worker_chars("b"), tree.worker_chars("c")) == (6, 6, 0)
    tree.remove_worker("b")
    assert (tree.worker_chars("a"), tree.worker_chars("b")) == (6, 0)
    small = PrefixTree(10)
    for i in range(20):
        small.insert(f"{i:02d}-text", f"w{i % 3}")
    held: dict[str, int] = {}
    for label, holders, _leaf in small.nodes():  # recount from the nodes themselves
        for w in holders:
            held[w] = held.get(w, 0) + len(label)
    names = ("w0", "w1", "w2")
    assert {w: small.worker_chars(w) for w in names} == {w: held.get(w, 0) for w in names}


def test_lru_front_is_always_a_leaf_and_eviction_is_incremental() -> None:
    """Every node follows its descendants in the LRU order, so the front is a leaf; an insert
    evicts only what it overfilled (no sweep), keeping the tree just under its budget."""
    tree = PrefixTree(2_000)
    for i in range(3_000):
        tree.insert(f"system {i % 5} | user {i % 37} | turn {i}", f"w{i % 3}")
        if i % 50:
            continue
        nodes = tree.nodes()
        assert nodes[0][2], "LRU front must be a leaf"
        assert tree.size_chars <= 2_000
        assert tree.size_chars == sum(len(label) for label, _, _ in nodes)
    assert tree.size_chars > 2_000 - 40  # filled to the budget, not swept down to 90%


def test_tree_adds_no_objects_for_the_garbage_collector_to_walk() -> None:
    """Nodes are ids into lists of str/int and dicts of str → int, which gc does not track."""
    import gc

    gc.collect()
    before = len(gc.get_objects())
    tree = PrefixTree(10_000_000)
    for i in range(500):
        tree.insert(f"conversation {i % 20} then question {i}", f"w{i % 4}")
    gc.collect()
    assert tree.num_nodes > 500
    assert len(gc.get_objects()) - before < 20  # the lists, the LRU order, two small dicts: not per node
