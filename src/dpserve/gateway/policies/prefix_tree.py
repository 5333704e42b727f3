"""Approximate radix tree over routing text: which workers saw which prefixes, in one char budget.

Each node holds an edge label and the set of workers whose routed text passed through it. The
tree is shared by all workers, so a prefix sent to several workers is stored once; its size is
the sum of edge lengths and stays under `max_chars` by evicting least-recently-used leaves.
Recency is a logical tick (no clock), so behaviour is exact and repeatable.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field

# Evict down to this share of the budget so eviction runs once per many inserts, not per insert.
_EVICT_TO = 0.9


@dataclass(eq=False, slots=True)  # slots: one node per routed text, smaller and faster
class _Node:
    label: str
    parent: _Node | None
    children: dict[str, _Node] = field(default_factory=dict)  # first char of child label → child
    workers: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    last_used: int = 0


@dataclass(frozen=True)
class Match:
    """Longest matched prefix of the text: the candidates holding it (tree order) and its length."""

    worker_ids: tuple[str, ...]
    matched_chars: int

    @property
    def worker_id(self) -> str | None:
        return self.worker_ids[0] if self.worker_ids else None


def _common_len(label: str, text: str, pos: int) -> int:
    """Length of the common prefix of `label` and `text[pos:]`, compared in C, not char by char."""
    if text.startswith(label, pos):  # the usual case on a hit: the whole edge matches
        return len(label)
    lo, hi = 0, min(len(label), len(text) - pos)
    while lo < hi:  # binary search on prefix equality: O(log n) slice compares
        mid = (lo + hi + 1) // 2
        if text.startswith(label[:mid], pos):
            lo = mid
        else:
            hi = mid - 1
    return lo


class PrefixTree:
    """Insert (text, worker), longest match among candidate workers, remove a worker."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._root = _Node("", None)
        self._chars = 0
        self._tick = 0
        self._worker_chars: dict[str, int] = {}  # chars of the nodes each worker holds

    @property
    def size_chars(self) -> int:
        return self._chars

    def worker_chars(self, worker_id: str) -> int:
        """Characters of the tree's nodes `worker_id` holds: how much routed text it still has."""
        return self._worker_chars.get(worker_id, 0)

    def match(self, text: str, candidates: Set[str]) -> Match:
        """The candidates holding the longest matched prefix of `text`, and its length."""
        node, pos, end = self._root, 0, len(text)
        deepest: _Node | None = None
        matched = 0
        while pos < end:
            child = node.children.get(text[pos])
            # isdisjoint runs in C; a Python any() over the holders cost ~1 µs per node.
            if child is None or candidates.isdisjoint(child.workers):
                break
            label = child.label
            # Fast path inline (whole edge matches); the function call only on a partial edge.
            n = len(label) if text.startswith(label, pos) else _common_len(label, text, pos)
            deepest, matched = child, pos + n
            if n < len(label):
                break
            node, pos = child, pos + n
        if deepest is None:
            return Match((), 0)
        return Match(tuple(w for w in deepest.workers if w in candidates), matched)

    def insert(self, text: str, worker_id: str) -> None:
        """Record that `text` went to `worker_id`; evicts LRU leaves when over budget."""
        self._tick += 1
        tick, node, pos, end = self._tick, self._root, 0, len(text)
        while pos < end:
            child = node.children.get(text[pos])
            if child is None:
                leaf = _Node(text[pos:], node, last_used=tick)
                leaf.workers[worker_id] = None
                node.children[text[pos]] = leaf
                self._chars += end - pos
                self._worker_chars[worker_id] = self._worker_chars.get(worker_id, 0) + end - pos
                break
            label = child.label
            n = len(label) if text.startswith(label, pos) else _common_len(label, text, pos)  # as in match
            if n < len(label):
                child = self._split(child, n)
            if worker_id not in child.workers:
                self._worker_chars[worker_id] = self._worker_chars.get(worker_id, 0) + len(child.label)
                child.workers[worker_id] = None  # inline: this loop runs once per request per node
            child.last_used = tick
            node, pos = child, pos + n
        if self._chars > self.max_chars:
            self._evict(int(self.max_chars * _EVICT_TO))

    def remove_worker(self, worker_id: str) -> None:
        """Forget `worker_id` everywhere; nodes no worker holds any more are dropped."""
        stack = list(self._root.children.values())
        while stack:
            node = stack.pop()
            if worker_id in node.workers:
                del node.workers[worker_id]
                self._worker_chars[worker_id] -= len(node.label)
            if not node.workers:
                self._drop_subtree(node)
            else:
                stack.extend(node.children.values())
        self._worker_chars.pop(worker_id, None)

    def _split(self, child: _Node, at: int) -> _Node:
        """Split child's edge at `at`: parent → middle(label[:at]) → child(label[at:])."""
        parent = child.parent
        assert parent is not None
        middle = _Node(child.label[:at], parent, workers=dict(child.workers), last_used=child.last_used)
        parent.children[middle.label[0]] = middle
        child.label = child.label[at:]
        child.parent = middle
        middle.children[child.label[0]] = child
        return middle

    def _drop_subtree(self, node: _Node) -> None:
        stack = [node]
        while stack:
            n = stack.pop()
            self._chars -= len(n.label)
            for w in n.workers:
                self._worker_chars[w] -= len(n.label)
            stack.extend(n.children.values())
        if node.parent is not None:
            node.parent.children.pop(node.label[0], None)

    def _leaves(self) -> list[_Node]:
        leaves, stack = [], list(self._root.children.values())
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            else:
                leaves.append(node)
        return leaves

    def _evict(self, target_chars: int) -> None:
        """Drop least-recently-used leaves (parents become leaves in turn) until under target."""
        while self._chars > target_chars:
            leaves = sorted(self._leaves(), key=lambda n: n.last_used)
            if not leaves:
                return
            for leaf in leaves:
                if self._chars <= target_chars:
                    return
                self._drop_subtree(leaf)
