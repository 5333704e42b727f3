"""PolicyConfig: the routing policy's name and knobs (flags of `dpserve router`)."""

from __future__ import annotations

from dataclasses import dataclass

from dpserve.config import option, require
from dpserve.gateway.policies import DEFAULT_POLICY, POLICY_NAMES


@dataclass(frozen=True)
class PolicyConfig:
    """Which policy chooses the replica, and the knobs of the policies that have some."""

    policy: str = option(DEFAULT_POLICY, "routing policy", choices=POLICY_NAMES)
    cache_threshold: float = option(
        0.3, "cache_aware: route to the longest prefix match when matched/len exceeds this")
    balance_abs_threshold: float = option(
        64.0, "cache_aware: load is imbalanced when max-min exceeds this (and the relative threshold)")
    balance_rel_threshold: float = option(
        1.5, "cache_aware: load is imbalanced when max > min * this (and the absolute threshold)")
    max_tree_chars: int = option(
        16 * 1024 * 1024, "cache_aware: one budget in characters for the prefix tree of all workers")
    hash_balance_factor: float = option(
        1.25, "consistent_hash: no worker above this times the mean load; the ring's next takes overflow")
    hash_virtual_nodes: int = option(160, "consistent_hash: virtual nodes per worker (times its weight)")
    sticky_return_home: bool = option(
        False, "consistent_hash: a session moved by failover returns home when its replica recovers")
    seed: int | None = option(None, "seed of the policies' random generator (default: random)")
    kv_events_tokenizer: str | None = option(
        None, "precise_prefix: the replicas' tokenizer, to compute a request's KV block keys as they "
              "do: a bundled model name or HF model directory, or `sim` for `dpserve sim` replicas "
              "(dpserve serve sets it); unset: precise_prefix routes like cache_aware",
        metavar="NAME_OR_PATH")
    kv_pending_ttl_s: float = option(
        2.0, "precise_prefix: a routed request's blocks count on its replica for this long before "
             "the replica's own events confirm them (so a burst of a new prefix stays together)")
    kv_index_max_blocks_per_worker: int = option(
        1 << 20, "precise_prefix: most KV blocks the event index keeps per replica (oldest dropped); "
                 "~440 bytes each, so the default bounds one replica's entries at ~460 MB; the "
                 "routing decisions pending for --kv-pending-ttl-s keep at most as many keys")

    def __post_init__(self) -> None:
        require(0.0 <= self.cache_threshold <= 1.0, "--cache-threshold must be in [0, 1]")
        require(self.balance_abs_threshold >= 0, "--balance-abs-threshold must be >= 0")
        require(self.balance_rel_threshold >= 1.0, "--balance-rel-threshold must be >= 1")
        require(self.max_tree_chars >= 1, "--max-tree-chars must be >= 1")
        require(self.hash_balance_factor >= 1.0, "--hash-balance-factor must be >= 1")
        require(self.hash_virtual_nodes >= 1, "--hash-virtual-nodes must be >= 1")
        require(self.kv_pending_ttl_s >= 0, "--kv-pending-ttl-s must be >= 0")
        require(self.kv_index_max_blocks_per_worker >= 1, "--kv-index-max-blocks-per-worker must be >= 1")
