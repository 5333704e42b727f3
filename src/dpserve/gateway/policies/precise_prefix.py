"""precise_prefix: route on the replicas' real KV caches (their KV events); else the approximate tree."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence

from dpserve.gateway.kv_events.index import KvBlockIndex
from dpserve.gateway.kv_events.prompt_keys import MAX_KEYED_PROMPT_CHARS, PromptKeyer
from dpserve.gateway.policies.base import (
    Candidate,
    Choice,
    Policy,
    RouteRequest,
    is_imbalanced,
    least_loaded,
    weighted_load,
)
from dpserve.gateway.policies.cache_aware import CacheAwarePolicy
from dpserve.gateway.policies.config import PolicyConfig
from dpserve.kv_events.wire import AllBlocksCleared, KVEvent

# A miss goes to the replica holding the least text among those at most this much busier than the
# least loaded, in weighted load (one request on a weight-1 replica, four on a weight-4 one): so that
# load still decides between busy and idle.
MISS_LOAD_SLACK = 1.0


class PrecisePrefixPolicy(Policy):
    """Longest cached prefix from the replicas' own BlockStored/BlockRemoved events, against load.

    `prepare` computes the request's block keys as the replica will (same tokenizer, chat template,
    block size and chained hash). `select`: the imbalance guard of `cache_aware` first; then each
    candidate's cached prefix — from the event index for replicas that publish events, from
    cache_aware's approximate tree for those that do not — and the least loaded of those with the
    longest one when it covers more than --cache-threshold of the prompt ("cache_hit"), else
    ("cache_miss": never seen, or evicted everywhere) the replica with the least tree text among
    those about as idle as the idlest (`_place_miss`). Wherever a miss lands, the events then show
    the prefix there, so a miss needs no affinity to where the tree last sent its text. A restarted
    replica (AllBlocksCleared) also leaves the tree, which routes the requests that have no keys.

    Every decision is also noted for --kv-pending-ttl-s (a burst of a new prefix follows its first
    request before that one's blocks are published) and recorded in the tree. Without keys (no
    tokenizer configured, no event seen yet, a body the replica will refuse, a prompt over
    MAX_KEYED_PROMPT_CHARS, keys slower than the keyer's wait budget) the request is routed by
    `cache_aware` alone.
    """

    name = "precise_prefix"
    wants_kv_events = True

    def __init__(self, config: PolicyConfig, rng: random.Random, clock: Callable[[], float]) -> None:
        super().__init__(config, rng, clock)
        self.index = KvBlockIndex(config.kv_index_max_blocks_per_worker, config.kv_pending_ttl_s)
        self.fallback = CacheAwarePolicy(config, rng, clock)
        self.keyer = PromptKeyer(config.kv_events_tokenizer) if config.kv_events_tokenizer else None
        self.num_index_hits = 0  # cache_hit decisions on a prefix the replica's events showed cached

    async def prepare(self, request: RouteRequest) -> RouteRequest:
        keyer = self.keyer
        if keyer is None or request.body is None or len(request.text) > MAX_KEYED_PROMPT_CHARS:
            return request
        block_size = self.index.block_size
        if block_size is None or not keyer.is_ready:  # no event yet, or its worker starting: the tree
            keyer.start()
            return request
        result = await keyer.keys(request.endpoint, request.body, block_size)
        return request if result is None else dataclasses.replace(request, block_keys=result[0])

    def select(self, candidates: Sequence[Candidate], request: RouteRequest) -> Choice:
        keys = request.block_keys
        if keys is None:
            return self.fallback.select(candidates, request)
        choice = self._choose(candidates, request, keys)
        if request.text:
            self.fallback.tree.insert(request.text, choice.worker.id)
        self.index.note_routed(choice.worker.id, keys, self.clock())
        return choice

    def _choose(self, candidates: Sequence[Candidate], request: RouteRequest,
                keys: Sequence[int]) -> Choice:
        if len(candidates) > 1 and is_imbalanced(candidates, self.config):
            return Choice(least_loaded(candidates, self.rng), "imbalance")
        shares = self._cached_shares(candidates, request, keys)
        best = max(shares.values())
        if best > self.config.cache_threshold:
            holders = [w for w in candidates if shares[w.id] == best]
            chosen = least_loaded(holders, self.rng)
            if self.index.is_tracked(chosen.id):  # the share is the replica's own events', not a guess
                self.num_index_hits += 1
            return Choice(chosen, "cache_hit")
        return Choice(self._place_miss(candidates), "cache_miss")

    def _place_miss(self, candidates: Sequence[Candidate]) -> Candidate:
        """Among the replicas within MISS_LOAD_SLACK of the least weighted load, the one the tree
        shows holding the least text (cache_aware's `coldest`).

        Load alone (the placement before) ignores what a replica already has to keep cached: in the
        multi-turn experiment under eviction a new session went wherever the in-flight count was
        lowest at that instant, so in 3 of 14 runs some replicas came to own 9 or 10 sessions and
        others 4 to 7; the crowded ones cycled their LRU through more history than they hold and
        the fleet's hit rate fell from 63 % to 49-62 %. The tree's text per replica is what each
        must keep (each session's history once). Text alone (cache_aware's placement) let load
        drift apart on the shared-prefix experiment (output 1,621 vs 1,810 tok/s), hence the slack:
        only replicas about as idle as the idlest are considered. Measured (docs/benchmarks.md,
        "Current: tree `99aa7c4`"): multi-turn, every session placed 8 to a replica in 14 of 14 runs;
        shared-prefix, hit rate 57.6 % vs cache_aware's 56.3 % over 6 runs each."""
        if len(candidates) == 1:
            return candidates[0]
        loads = [weighted_load(w) for w in candidates]
        floor = min(loads)
        return self.fallback.coldest([w for w, load in zip(candidates, loads, strict=True)
                                      if load <= floor + MISS_LOAD_SLACK])

    def _cached_shares(self, candidates: Sequence[Candidate], request: RouteRequest,
                       keys: Sequence[int]) -> dict[str, float]:
        """Fraction of the prompt each candidate holds: exact from events, else the tree's guess."""
        tracked = [w.id for w in candidates if self.index.is_tracked(w.id)]
        shares: dict[str, float] = {}
        if tracked and keys:
            matched = self.index.match(keys, tracked, self.clock())
            shares = {w: n / len(keys) for w, n in matched.items()}
        untracked = [w.id for w in candidates if w.id not in shares]
        if untracked and request.text:
            match = self.fallback.tree.match(request.text, set(untracked))
            share = match.matched_chars / len(request.text)
            shares.update({w: share for w in match.worker_ids})
        return {w.id: shares.get(w.id, 0.0) for w in candidates}

    def on_kv_events(self, worker_id: str, events: Sequence[KVEvent]) -> None:
        if self.keyer is not None:
            self.keyer.start()  # with the first events, so it is ready before the first request
        self.index.apply(worker_id, events)
        if any(isinstance(e, AllBlocksCleared) for e in events):  # restarted: its old prefixes are gone
            self.fallback.tree.remove_worker(worker_id)

    def on_worker_removed(self, worker_id: str) -> None:
        self.index.drop_worker(worker_id)
        self.fallback.on_worker_removed(worker_id)

    async def close(self) -> None:
        if self.keyer is not None:
            self.keyer.close()

    def gauges(self) -> Mapping[str, float]:
        keyer = self.keyer
        return {**self.fallback.gauges(), "dpserve_kv_index_blocks": float(self.index.size),
                "dpserve_kv_index_skipped_events_total": float(self.index.num_skipped_events),
                # 1 once requests get block keys (0: routed by the tree — starting, or no tokenizer)
                "dpserve_kv_keyer_ready": float(keyer is not None and keyer.is_ready),
                "dpserve_kv_keys_late_total": float(0 if keyer is None else keyer.num_late),
                "dpserve_kv_index_hits_total": float(self.num_index_hits)}
