"""The sim's continuous-batching scheduler (pure; no clock, no asyncio).

Each step, like vLLM V1: running sequences first (one decode token each, or their next prefill
chunk), then waiting ones FCFS while there is token budget, a free sequence slot and KV room.
A prefix-cache hit at admission skips those tokens' prefill. When a running sequence needs a
block and none is free, the most recently admitted one is preempted (recompute).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from dpserve.serving.engine_client import FinishReason, SamplingParams
from dpserve.sim.block_pool import BlockPool, BlockRef, chain_block_hashes
from dpserve.sim.config import SimEngineConfig
from dpserve.sim.time_model import StepShape


@dataclass(eq=False)
class SimSequence:
    """One request's tokens (prompt + generated), prefill progress and blocks."""

    request_id: str
    token_ids: list[int]
    sampling: SamplingParams
    num_prompt_tokens: int = field(init=False)
    num_computed: int = 0
    num_cached_tokens: int = 0  # prefix-cache hit at first admission (reported in usage)
    blocks: list[BlockRef] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)  # chained hashes of full blocks so far
    # Hashes of all full blocks of token_ids, kept while the sequence waits (admission retries).
    lookup_hashes: list[int] | None = None
    is_admitted_once: bool = False
    is_running: bool = False
    finish_reason: FinishReason | None = None

    def __post_init__(self) -> None:
        self.num_prompt_tokens = len(self.token_ids)

    @property
    def num_generated(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens


@dataclass(frozen=True)
class StepPlan:
    """Sequences scheduled this step and how many of their tokens each computes."""

    scheduled: list[tuple[SimSequence, int]]
    shape: StepShape

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class SimScheduler:
    """Waiting queue, running batch and the block pool of one simulated replica."""

    def __init__(self, config: SimEngineConfig) -> None:
        self._config = config
        self.block_size = config.block_size
        self.pool = BlockPool(config.num_blocks, config.enable_prefix_caching)
        self.waiting: deque[SimSequence] = deque()
        self.running: list[SimSequence] = []
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.num_preemptions = 0

    def add(self, seq: SimSequence) -> None:
        self.waiting.append(seq)

    def abort(self, seq: SimSequence) -> None:
        """Remove a sequence wherever it is and free its blocks at once."""
        if seq.is_running:
            self.running.remove(seq)
            seq.is_running = False
        elif seq.finish_reason is None and seq in self.waiting:
            self.waiting.remove(seq)
        self._free(seq)
        seq.finish_reason = seq.finish_reason or "abort"

    def finish(self, seq: SimSequence, reason: FinishReason) -> None:
        self.running.remove(seq)
        seq.is_running = False
        self._free(seq)
        seq.finish_reason = reason

    def schedule(self) -> StepPlan:
        budget = self._config.max_num_batched_tokens
        scheduled: list[tuple[SimSequence, int]] = []
        for seq in list(self.running):
            if budget == 0:
                break
            if not seq.is_running:  # preempted to make room for an earlier sequence
                continue
            n = min(len(seq.token_ids) - seq.num_computed, budget)
            if self._reserve_running(seq, n):
                scheduled.append((seq, n))
                budget -= n
        while budget > 0 and self.waiting and len(self.running) < self._config.max_num_seqs:
            seq = self.waiting[0]
            chunk = self._admit(seq, budget)
            if chunk is None:
                break  # FCFS: the head waits for KV room, and so does everyone behind it
            self.waiting.popleft()
            self.running.append(seq)
            seq.is_running = True
            scheduled.append((seq, chunk))
            budget -= chunk
        return StepPlan(scheduled, self._shape(scheduled))

    def complete(self, plan: StepPlan) -> list[SimSequence]:
        """Apply a step's computation; returns the sequences that now need a sampled token."""
        ready = []
        for seq, n in plan.scheduled:
            if not seq.is_running:
                continue  # aborted or preempted during the step
            seq.num_computed += n
            self._cache_full_blocks(seq)
            if seq.num_computed == len(seq.token_ids):
                ready.append(seq)
        return ready

    def _reserve_running(self, seq: SimSequence, n: int) -> bool:
        """Blocks for `n` more tokens of a running sequence, preempting the newest if needed."""
        need = self._blocks_for(seq.num_computed + n) - len(seq.blocks)
        while need > 0:
            new = self.pool.allocate(need)
            if new is not None:
                seq.blocks += new
                return True
            victim = self.running[-1]
            self._preempt(victim)
            if victim is seq:
                return False
        return True

    def _admit(self, seq: SimSequence, budget: int) -> int | None:
        """Acquire prefix hits and blocks for the first chunk; None if KV has no room."""
        if seq.lookup_hashes is None or len(seq.lookup_hashes) != len(seq.token_ids) // self.block_size:
            seq.lookup_hashes = chain_block_hashes(seq.token_ids, self.block_size)
        hashes = seq.lookup_hashes
        # Always compute at least the last token (its logits give the first new token).
        hit_blocks = min(self.pool.count_hits(hashes), (len(seq.token_ids) - 1) // self.block_size)
        num_cached = hit_blocks * self.block_size
        n = min(len(seq.token_ids) - num_cached, budget)
        num_new = self._blocks_for(num_cached + n) - hit_blocks
        if not self.pool.can_allocate(hashes[:hit_blocks], num_new):
            return None
        seq.blocks = self.pool.acquire(hashes[:hit_blocks])
        new = self.pool.allocate(num_new)
        assert new is not None  # checked by can_allocate
        seq.blocks += new
        seq.block_hashes = hashes[:hit_blocks]
        seq.num_computed = num_cached
        if not seq.is_admitted_once:
            seq.is_admitted_once = True
            seq.num_cached_tokens = num_cached
            self.prefix_cache_queries += seq.num_prompt_tokens
            self.prefix_cache_hits += num_cached
        return n

    def _cache_full_blocks(self, seq: SimSequence) -> None:
        num_full = seq.num_computed // self.block_size
        if num_full <= len(seq.block_hashes):
            return
        parent = seq.block_hashes[-1] if seq.block_hashes else None
        new_hashes = chain_block_hashes(seq.token_ids[:num_full * self.block_size], self.block_size,
                                        parent, len(seq.block_hashes))
        for i, h in enumerate(new_hashes, start=len(seq.block_hashes)):
            if seq.blocks[i] is None:
                seq.blocks[i] = self.pool.promote(h)
        seq.block_hashes += new_hashes

    def _preempt(self, seq: SimSequence) -> None:
        self.running.remove(seq)
        seq.is_running = False
        self._free(seq)
        seq.num_computed = 0
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _free(self, seq: SimSequence) -> None:
        self.pool.release(seq.blocks)
        seq.blocks = []
        seq.block_hashes = []

    def _blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _shape(self, scheduled: list[tuple[SimSequence, int]]) -> StepShape:
        decode = [seq for seq, n in scheduled if n == 1 and seq.num_computed >= seq.num_prompt_tokens]
        prefill = sum(n for _, n in scheduled) - len(decode)
        context = sum(seq.num_computed for seq, _ in scheduled)
        return StepShape(num_prefill_tokens=prefill, num_decode_seqs=len(decode), num_context_tokens=context)
