"""Scheduler on plain Python: token budget, chunked prefill, FCFS, preemption by recompute."""

from __future__ import annotations

import pytest

from dpserve.engine.block_manager import BlockManager
from dpserve.engine.scheduler import ScheduledSeq, Scheduler
from dpserve.engine.sequence import Sequence, SequenceStatus
from dpserve.serving.engine_client import SamplingParams

EOS = 0


def make_scheduler(num_blocks: int = 64, block_size: int = 4, max_num_seqs: int = 8,
                   budget: int = 64, max_model_len: int = 256) -> Scheduler:
    bm = BlockManager(num_blocks, block_size)
    return Scheduler(bm, max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                     max_model_len=max_model_len, eos_token_ids=[EOS])


def add(sched: Scheduler, rid: str, num_prompt: int, max_tokens: int = 4, first: int | None = None,
        **kw: object) -> Sequence:
    """Prompts of different requests differ (no accidental prefix hits) unless `first` is given."""
    start = 1000 * (1 + sum(map(ord, rid))) if first is None else first
    params = SamplingParams(max_tokens=max_tokens, **kw)  # type: ignore[arg-type]
    seq = Sequence(rid, list(range(start, start + num_prompt)), params)
    sched.add(seq)
    return seq


def step(sched: Scheduler, token: int = 7) -> list[ScheduledSeq]:
    """Schedule, pretend the model ran, sample `token` for every sequence that reached its end."""
    batch = sched.schedule()
    sched.postprocess(batch, {it.seq: token for it in batch if it.samples})
    sched.block_manager.check_consistency(sched.running + list(sched.waiting))
    return batch


def plan(batch: list[ScheduledSeq]) -> list[tuple[str, int]]:
    return [(it.seq.request_id, it.num_new_tokens) for it in batch]


def test_token_budget_chunks_long_prefill() -> None:
    sched = make_scheduler(budget=10)
    seq = add(sched, "a", 25)
    assert plan(step(sched)) == [("a", 10)]
    assert plan(step(sched)) == [("a", 10)]
    assert seq.num_output_tokens == 0
    assert plan(step(sched)) == [("a", 5)]
    assert seq.num_output_tokens == 1  # sampled only once the last prompt token ran
    assert plan(step(sched)) == [("a", 1)]


def test_new_requests_join_running_batch_within_budget() -> None:
    sched = make_scheduler(budget=8)
    add(sched, "a", 6, max_tokens=10)
    assert plan(step(sched)) == [("a", 6)]
    add(sched, "b", 12)
    assert plan(step(sched)) == [("a", 1), ("b", 7)]  # decode first, then the rest of the budget
    assert plan(step(sched)) == [("a", 1), ("b", 5)]


def test_fcfs_head_blocks_later_requests() -> None:
    sched = make_scheduler(num_blocks=4, block_size=4, budget=64, max_model_len=16)
    add(sched, "big", 12, max_tokens=1)
    add(sched, "huge", 14, max_tokens=1)  # needs 4 blocks; only 1 left while "big" runs
    add(sched, "small", 2, max_tokens=1)  # would fit, but must not overtake "huge"
    assert plan(step(sched)) == [("big", 12)]
    assert plan(step(sched)) == [("huge", 14)]
    assert plan(step(sched)) == [("small", 2)]


def test_max_model_len_beyond_kv_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        make_scheduler(num_blocks=4, block_size=4, max_model_len=17)


def test_max_num_seqs_limits_running() -> None:
    sched = make_scheduler(max_num_seqs=2)
    for rid in "abc":
        add(sched, rid, 3)
    assert [r for r, _ in plan(step(sched))] == ["a", "b"]
    assert len(sched.waiting) == 1


def test_finish_on_eos_length_and_stop_ids() -> None:
    sched = make_scheduler()
    eos = add(sched, "eos", 3)
    ign = add(sched, "ign", 3, max_tokens=2, ignore_eos=True)
    stop = add(sched, "stop", 3, stop_token_ids=(0,))
    step(sched, token=EOS)
    assert eos.finish_reason == "stop" and stop.finish_reason == "stop"
    assert ign.finish_reason is None
    step(sched, token=EOS)
    assert ign.finish_reason == "length" and ign.num_output_tokens == 2
    assert not sched.has_work and sched.block_manager.num_free_blocks == 64


def test_max_model_len_ends_generation() -> None:
    sched = make_scheduler(max_model_len=6)
    seq = add(sched, "a", 4, max_tokens=100)
    while sched.has_work:
        step(sched)
    assert seq.finish_reason == "length" and seq.num_tokens == 6


def test_preemption_by_recompute_keeps_tokens_and_completes_all() -> None:
    sched = make_scheduler(num_blocks=6, block_size=4, budget=64, max_model_len=24)
    seqs = [add(sched, rid, 7, max_tokens=6, first=1) for rid in "abc"]
    tokens = iter(range(100, 10_000))
    preempted_seen = False
    while sched.has_work:
        batch = sched.schedule()
        preempted_seen |= sched.num_preemptions > 0
        sched.postprocess(batch, {it.seq: next(tokens) for it in batch if it.samples})
        sched.block_manager.check_consistency(sched.running + list(sched.waiting))
    assert preempted_seen
    for seq in seqs:
        assert seq.finish_reason == "length" and seq.num_output_tokens == 6
        assert seq.token_ids[:7] == list(range(1, 8))
    assert sched.block_manager.num_free_blocks == 6


def test_preempted_sequence_goes_back_to_the_front() -> None:
    sched = make_scheduler(num_blocks=4, block_size=4, budget=64, max_model_len=16)
    a = add(sched, "a", 7, max_tokens=20)
    b = add(sched, "b", 7, max_tokens=20)
    add(sched, "c", 3, max_tokens=20)
    while b.status is not SequenceStatus.WAITING or not b.was_scheduled:
        step(sched)
    assert sched.waiting[0] is b and b.num_computed_tokens == 0 and b.num_output_tokens > 0
    assert a.status is SequenceStatus.RUNNING


def test_abort_frees_blocks_from_running_and_waiting() -> None:
    sched = make_scheduler(max_num_seqs=1)
    add(sched, "a", 9, max_tokens=50)
    add(sched, "b", 9)
    step(sched)
    assert sched.abort("a") is not None and sched.abort("b") is not None
    assert sched.abort("a") is None
    assert not sched.has_work and sched.block_manager.num_free_blocks == 64


def test_prefix_cache_hit_reports_cached_tokens() -> None:
    sched = make_scheduler()
    first = add(sched, "a", 13, max_tokens=1, first=1)
    step(sched)
    assert first.is_finished
    again = add(sched, "b", 13, max_tokens=1, first=1)
    assert plan(step(sched)) == [("b", 1)]
    assert again.num_cached_tokens == 12
    assert sched.block_manager.prefix_cache_queries == 26 and sched.block_manager.prefix_cache_hits == 12


def test_waiting_retries_do_not_inflate_prefix_stats() -> None:
    sched = make_scheduler(num_blocks=6, block_size=4, budget=64, max_model_len=16)
    add(sched, "a", 9, max_tokens=1, first=1)
    step(sched)  # "a" done; its two full blocks stay cached, four blocks are empty
    add(sched, "hog", 13, max_tokens=30)  # takes the four empty blocks for three steps
    add(sched, "b", 12, max_tokens=1, first=1)  # 8 cached + 1 block: no room while "hog" runs
    for _ in range(3):
        step(sched)
    assert sched.waiting and sched.waiting[0].request_id == "b"
    assert sched.block_manager.prefix_cache_hits == 0
    while sched.has_work:
        step(sched)
    assert sched.block_manager.prefix_cache_hits == 8
