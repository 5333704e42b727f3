"""precise_prefix: longest cached prefix from events, imbalance guard, fallback to the tree."""

from __future__ import annotations

import random
from dataclasses import dataclass

from dpserve.gateway.policies.base import RouteRequest
from dpserve.gateway.policies.config import PolicyConfig
from dpserve.gateway.policies.precise_prefix import PrecisePrefixPolicy
from dpserve.kv_events.block_hash import chain_keys
from dpserve.kv_events.wire import AllBlocksCleared, BlockRemoved, BlockStored

TOKENS = list(range(64))  # 4 blocks of 16
KEYS = tuple(chain_keys(TOKENS, 16))


@dataclass
class W:
    id: str
    load_: float = 0.0
    weight: float = 1.0
    in_flight: int = 0

    def load(self) -> float:
        return self.load_


def policy(**kw: object) -> PrecisePrefixPolicy:
    config = PolicyConfig(policy="precise_prefix", kv_pending_ttl_s=0.0, **kw)  # type: ignore[arg-type]
    return PrecisePrefixPolicy(config, random.Random(0), lambda: 0.0)


def request(keys: tuple[int, ...] | None = KEYS, text: str = "t" * 64) -> RouteRequest:
    return RouteRequest(text, None, "/v1/completions", {"prompt": text}, keys)


def test_goes_where_the_longest_prefix_really_is() -> None:
    p = policy()
    a, b, c = W("a", 1.0), W("b", 5.0), W("c")
    p.on_kv_events("a", [BlockStored([1], None, TOKENS[:16], 16)])
    p.on_kv_events("b", [BlockStored([7, 8, 9], None, TOKENS[:48], 16)])
    p.on_kv_events("c", [])
    choice = p.select([a, b, c], request())
    assert (choice.worker.id, choice.reason) == ("b", "cache_hit")
    assert p.gauges()["dpserve_kv_index_hits_total"] == 1


def test_imbalance_overrides_the_cache() -> None:
    p = policy()
    a, b = W("a", 200.0), W("b", 0.0)
    p.on_kv_events("a", [BlockStored([1, 2, 3, 4], None, TOKENS, 16)])
    p.on_kv_events("b", [])
    choice = p.select([a, b], request())
    assert (choice.worker.id, choice.reason) == ("b", "imbalance")


def test_a_miss_goes_to_the_least_loaded_even_where_the_tree_points_elsewhere() -> None:
    p = policy()
    a, b = W("a", 3.0), W("b", 1.0)
    for w in (a, b):
        p.on_kv_events(w.id, [])
    p.fallback.tree.insert("t" * 64, "a")  # routed to a before, evicted since: a holds nothing
    choice = p.select([a, b], request())
    assert (choice.worker.id, choice.reason) == ("b", "cache_miss")


def test_a_miss_among_the_about_as_idle_goes_where_the_least_text_must_be_kept() -> None:
    """A new session goes to the replica that owns the least history among those within one request
    of the idlest, not to whichever had the fewest in flight at that instant."""
    p = policy()
    a, b, c = W("a", 1.0), W("b", 2.0), W("c", 3.0)
    for w in (a, b, c):
        p.on_kv_events(w.id, [])
    p.fallback.tree.insert("session one " * 50, "a")  # a owns two sessions' history, b one, c none
    p.fallback.tree.insert("session two " * 50, "a")
    p.fallback.tree.insert("session six " * 50, "b")
    choice = p.select([a, b, c], request())
    assert (choice.worker.id, choice.reason) == ("b", "cache_miss")  # c holds less, but is 2 busier


def test_evicted_blocks_stop_counting_and_a_copy_elsewhere_wins() -> None:
    p = policy()
    a, b, c = W("a", 0.0), W("b", 1.0), W("c", 0.0)
    p.on_kv_events("a", [BlockStored([1, 2, 3, 4], None, TOKENS, 16)])
    p.on_kv_events("b", [BlockStored([5, 6, 7, 8], None, TOKENS, 16)])
    p.on_kv_events("c", [])
    assert p.select([a, b, c], request()).worker.id == "a"  # least loaded of the two holders
    p.on_kv_events("a", [BlockRemoved([1])])
    choice = p.select([a, b, c], request())  # the tree says a; the events know b still holds it
    assert (choice.worker.id, choice.reason) == ("b", "cache_hit")


def test_a_restarted_replica_leaves_the_tree_too() -> None:
    p = policy()
    a, b = W("a", 0.0), W("b", 1.0)
    p.on_kv_events("a", [BlockStored([1, 2, 3, 4], None, TOKENS, 16)])
    p.on_kv_events("b", [])
    assert p.select([a, b], request()).worker.id == "a"
    p.on_kv_events("a", [AllBlocksCleared()])
    assert p.fallback.tree.worker_chars("a") == 0
    assert p.select([a, b], request()).reason == "cache_miss"


def test_workers_without_events_use_the_approximate_tree() -> None:
    p = policy()
    a, b = W("a", 0.0), W("b", 1.0)
    p.on_kv_events("a", [])  # a publishes, holds nothing; b publishes nothing
    p.fallback.tree.insert("t" * 64, "b")
    choice = p.select([a, b], request())
    assert (choice.worker.id, choice.reason) == ("b", "cache_hit")
    assert p.gauges()["dpserve_kv_index_hits_total"] == 0  # the tree's guess, not the index


def test_without_keys_it_routes_like_cache_aware_and_records_in_the_tree() -> None:
    p = policy()
    a, b = W("a"), W("b")
    first = p.select([a, b], request(keys=None))
    again = p.select([a, b], request(keys=None))
    assert again.worker.id == first.worker.id and again.reason == "cache_hit"
    assert p.gauges()["dpserve_kv_index_hits_total"] == 0


def test_removed_worker_is_forgotten() -> None:
    p = policy()
    p.on_kv_events("a", [BlockStored([1], None, TOKENS[:16], 16)])
    p.on_worker_removed("a")
    assert not p.index.is_tracked("a") and p.index.size == 0
