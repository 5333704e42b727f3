"""Approximate radix tree over routing text: which workers saw which prefixes, in one char budget.

Each node holds an edge label and the set of workers whose routed text passed through it. The
tree is shared by all workers, so a prefix sent to several workers is stored once; its size is
the sum of edge lengths and stays under `max_chars` by evicting least-recently-used leaves.

Layout, for the tail latency (issue 16): nodes are integer ids into parallel lists, the workers
holding a node are a bit mask (an int), and each node's children a `{first char: id}` dict.
Strings, ints and dicts of only those are not tracked by Python's garbage collector, so a tree of
100k nodes adds a handful of objects to a full collection instead of ~300k (a full collection
then took 40 ms of CPU on the event loop, and one of every few thousand requests waited for it).
Eviction is incremental: an LRU order of all nodes in which every node comes after its
descendants, so its front is always a leaf; each insert evicts only what it overfilled
(the old sweep sorted every leaf, ~10 ms per sweep at 8k leaves).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Set
from dataclasses import dataclass

_ROOT = 0
_NO_PARENT = -1


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
        # Node id → its edge label, parent id, children ({first char: id}, None for a leaf), holders.
        self._label: list[str] = [""]
        self._parent: list[int] = [_NO_PARENT]
        self._children: list[dict[str, int] | None] = [{}]
        self._holders: list[int] = [0]
        self._free: list[int] = []
        # Every node but the root, least recently used first; a node follows all its descendants.
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._chars = 0
        self._bit_of: dict[str, int] = {}  # worker id → its bit in the holder masks
        self._worker_chars: dict[str, int] = {}  # chars of the nodes each worker holds

    @property
    def size_chars(self) -> int:
        return self._chars

    @property
    def num_nodes(self) -> int:
        return len(self._lru)

    def worker_chars(self, worker_id: str) -> int:
        """Characters of the tree's nodes `worker_id` holds: how much routed text it still has."""
        return self._worker_chars.get(worker_id, 0)

    def match(self, text: str, candidates: Set[str]) -> Match:
        """The candidates holding the longest matched prefix of `text`, and its length."""
        bit_of = self._bit_of
        wanted = 0
        for w in candidates:
            wanted |= bit_of.get(w, 0)
        if not wanted:
            return Match((), 0)
        labels, children_of, holders = self._label, self._children, self._holders
        node, pos, end = _ROOT, 0, len(text)
        deepest, matched = _NO_PARENT, 0
        while pos < end:
            children = children_of[node]
            child = children.get(text[pos]) if children else None
            if child is None or not holders[child] & wanted:
                break
            label = labels[child]
            # Fast path inline (whole edge matches); the function call only on a partial edge.
            n = len(label) if text.startswith(label, pos) else _common_len(label, text, pos)
            deepest, matched = child, pos + n
            if n < len(label):
                break
            node, pos = child, pos + n
        if deepest == _NO_PARENT:
            return Match((), 0)
        held = holders[deepest] & wanted
        return Match(tuple(w for w, bit in bit_of.items() if held & bit), matched)

    def insert(self, text: str, worker_id: str) -> None:
        """Record that `text` went to `worker_id`; evicts LRU leaves when over budget."""
        bit = self._bit_of.get(worker_id) or self._new_bit(worker_id)
        labels, children_of, holders = self._label, self._children, self._holders
        node, pos, end = _ROOT, 0, len(text)
        path = []
        gained = 0  # chars of nodes this worker did not hold yet
        while pos < end:
            children = children_of[node]
            child = children.get(text[pos]) if children else None
            if child is None:
                path.append(self._new_node(text[pos:], node, bit))
                gained += end - pos
                break
            label = labels[child]
            n = len(label) if text.startswith(label, pos) else _common_len(label, text, pos)  # as in match
            if n < len(label):
                child = self._split(child, n)
            if not holders[child] & bit:
                holders[child] |= bit
                gained += n
            path.append(child)
            node, pos = child, pos + n
        if gained:
            self._worker_chars[worker_id] = self._worker_chars.get(worker_id, 0) + gained
        touch = self._lru.move_to_end
        for n in reversed(path):  # deepest first: every node ends up after its descendants
            touch(n)
        while self._chars > self.max_chars and self._lru:
            self._drop(next(iter(self._lru)))

    def remove_worker(self, worker_id: str) -> None:
        """Forget `worker_id` everywhere; nodes no worker holds any more are dropped."""
        bit = self._bit_of.pop(worker_id, 0)
        self._worker_chars.pop(worker_id, None)
        if not bit:
            return
        stack = [c for c in (self._children[_ROOT] or {}).values()]
        while stack:
            node = stack.pop()
            self._holders[node] &= ~bit
            kids = self._children[node]
            if kids:
                stack.extend(kids.values())
        # A child's holders are a subset of its parent's: dropping leaves-first empties subtrees.
        for node in [n for n in self._lru if not self._holders[n]]:
            self._drop(node)

    def nodes(self) -> list[tuple[str, tuple[str, ...], bool]]:
        """Every node but the root as (label, holders, is_leaf), least recently used first."""
        return [(self._label[n], tuple(w for w, b in self._bit_of.items() if self._holders[n] & b),
                 not self._children[n]) for n in self._lru]

    def _new_bit(self, worker_id: str) -> int:
        used = 0
        for b in self._bit_of.values():
            used |= b
        bit = (used + 1) & ~used  # lowest free bit: ids of removed workers are reused
        self._bit_of[worker_id] = bit
        return bit

    def _new_node(self, label: str, parent: int, holders: int) -> int:
        if self._free:
            node = self._free.pop()
            self._label[node], self._parent[node] = label, parent
            self._children[node], self._holders[node] = None, holders
        else:
            node = len(self._label)
            self._label.append(label)
            self._parent.append(parent)
            self._children.append(None)
            self._holders.append(holders)
        kids = self._children[parent]
        if kids is None:
            kids = self._children[parent] = {}
        kids[label[0]] = node
        self._lru[node] = None
        self._chars += len(label)
        return node

    def _split(self, child: int, at: int) -> int:
        """Split child's edge at `at`: parent → middle(label[:at]) → child(label[at:])."""
        label, parent = self._label[child], self._parent[child]
        self._chars -= len(label)  # _new_node counts the middle's chars; the child keeps the rest
        middle = self._new_node(label[:at], parent, self._holders[child])
        self._label[child], self._parent[child] = label[at:], middle
        self._children[middle] = {label[at]: child}
        self._chars += len(label) - at
        return middle

    def _drop(self, node: int) -> None:
        """Remove one node (a leaf, or one whose children are being dropped too)."""
        label = self._label[node]
        size = len(label)
        self._chars -= size
        held = self._holders[node]
        if held:
            for w, bit in self._bit_of.items():
                if held & bit:
                    self._worker_chars[w] -= size
        parent = self._parent[node]
        kids = self._children[parent]
        if kids is not None and kids.get(label[0]) == node:
            del kids[label[0]]
        del self._lru[node]
        self._label[node], self._children[node], self._holders[node] = "", None, 0
        self._parent[node] = _NO_PARENT
        self._free.append(node)
