"""Scheduler: continuous batching with a per-step token budget, chunked prefill, FCFS admission and
preemption by recompute. Plain Python (no torch)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from dpserve.engine.block_manager import BlockManager
from dpserve.engine.sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class ScheduledSeq:
    """Run the model on `num_new_tokens` tokens of `seq` starting at its computed prefix."""

    seq: Sequence
    num_new_tokens: int

    @property
    def samples(self) -> bool:
        """True when this chunk reaches the sequence's last token, so a new token is sampled."""
        return self.seq.num_computed_tokens + self.num_new_tokens == self.seq.num_tokens


class Scheduler:
    """Decides, every step, which sequences run and on how many tokens."""

    def __init__(self, block_manager: BlockManager, *, max_num_seqs: int, max_num_batched_tokens: int,
                 max_model_len: int, eos_token_ids: Iterable[int] = ()) -> None:
        capacity = block_manager.num_blocks * block_manager.block_size
        if max_model_len > capacity:  # a lone sequence could then never get its blocks: livelock
            raise ValueError(f"max_model_len {max_model_len} exceeds the KV cache capacity {capacity}")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.eos_token_ids = frozenset(eos_token_ids)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        if seq.num_tokens < 1 or seq.num_tokens >= self.max_model_len:
            raise ValueError(f"prompt of {seq.num_tokens} tokens does not fit max_model_len "
                             f"{self.max_model_len}")
        self.waiting.append(seq)

    def abort(self, request_id: str) -> Sequence | None:
        """Remove the request wherever it is and free its blocks now; None if unknown/finished."""
        for queue in (self.running, self.waiting):
            for seq in queue:
                if seq.request_id == request_id:
                    queue.remove(seq)
                    self._finish(seq, "abort")
                    return seq
        return None

    # -- schedule -----------------------------------------------------------------------------
    def schedule(self) -> list[ScheduledSeq]:
        """Running sequences first (FCFS, decode and unfinished prefill chunks), then waiting ones
        while the token budget, the seq limit and the KV blocks allow."""
        budget = self.max_num_batched_tokens
        batch: list[ScheduledSeq] = []
        preempted = self._schedule_running(batch, budget)
        budget -= sum(item.num_new_tokens for item in batch)
        if not preempted:
            self._schedule_waiting(batch, budget)
        return batch

    def _schedule_running(self, batch: list[ScheduledSeq], budget: int) -> bool:
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not self.block_manager.ensure_slots(seq, seq.num_computed_tokens + num_new):
                victim = self.running.pop()  # the newest arrival loses its blocks first
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    return preempted
            batch.append(ScheduledSeq(seq, num_new))
            budget -= num_new
            i += 1
        return preempted

    def _schedule_waiting(self, batch: list[ScheduledSeq], budget: int) -> None:
        bm = self.block_manager
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            cached = bm.allocate_cached_prefix(seq) if not seq.block_table else 0
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if not bm.ensure_slots(seq, seq.num_computed_tokens + num_new):
                bm.free(seq)  # give the cached prefix back; FCFS: nobody overtakes the head
                return
            self.waiting.popleft()
            bm.record_lookup(seq.num_tokens, cached)
            if not seq.was_scheduled:
                seq.num_cached_tokens = min(cached, seq.num_prompt_tokens)
            seq.status = SequenceStatus.RUNNING
            seq.was_scheduled = True
            self.running.append(seq)
            batch.append(ScheduledSeq(seq, num_new))
            budget -= num_new

    def _preempt(self, seq: Sequence) -> None:
        """Recompute-style preemption: drop the KV, keep the tokens, requeue at the front."""
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    # -- post-process -------------------------------------------------------------------------
    def postprocess(self, batch: list[ScheduledSeq], sampled: dict[Sequence, int]) -> list[Sequence]:
        """Advance computed counts, register full blocks, append sampled tokens, finish sequences.
        Returns the sequences that got a new token (finished ones included)."""
        updated: list[Sequence] = []
        for item in batch:
            seq = item.seq
            seq.num_computed_tokens += item.num_new_tokens
            self.block_manager.commit_full_blocks(seq)
            token = sampled.get(seq)
            if token is None:
                continue
            seq.token_ids.append(token)
            updated.append(seq)
            reason = self._finish_reason(seq, token)
            if reason is not None:
                self.running.remove(seq)
                self._finish(seq, reason)
        return updated

    def _finish_reason(self, seq: Sequence, token: int) -> str | None:
        params = seq.sampling
        if token in params.stop_token_ids or (not params.ignore_eos and token in self.eos_token_ids):
            return "stop"
        if seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    def _finish(self, seq: Sequence, reason: str) -> None:
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason  # type: ignore[assignment]
