"""The sim's batching = the engine's Scheduler with the sim's limits: token budget, chunked prefill,
seq limit, KV waiting, prefix hits, preemption, and the step shape the time model charges."""

from __future__ import annotations

from dpserve.engine.scheduler import ScheduledSeq, Scheduler
from dpserve.engine.sequence import Sequence
from dpserve.serving.engine_client import SamplingParams
from dpserve.sim.config import SimEngineConfig
from dpserve.sim.engine import build_scheduler, step_shape


def make(config: SimEngineConfig | None = None) -> Scheduler:
    return build_scheduler(config or SimEngineConfig(max_model_len=64, kv_cache_tokens=64, block_size=4,
                                                     max_num_batched_tokens=32, max_num_seqs=4))


def seq(name: str, prompt_len: int, first: int = 100, max_tokens: int = 8) -> Sequence:
    return Sequence(name, list(range(first, first + prompt_len)), SamplingParams(max_tokens=max_tokens))


def run(s: Scheduler, batch: list[ScheduledSeq], new_token: int = 7) -> list[tuple[str, int]]:
    s.postprocess(batch, {it.seq: new_token for it in batch if it.samples})
    s.block_manager.check_consistency(s.running + list(s.waiting))
    return [(it.seq.request_id, it.num_new_tokens) for it in batch]


def step(s: Scheduler, new_token: int = 7) -> list[tuple[str, int]]:
    """One step; every sequence that finished its tokens 'samples' `new_token`."""
    return run(s, s.schedule(), new_token)


def test_decode_and_chunked_prefill_share_the_budget() -> None:
    s = make()
    s.add(seq("a", 10))
    s.add(seq("b", 40, first=500))
    assert step(s) == [("a", 10), ("b", 22)]
    batch = s.schedule()
    assert step_shape(batch).num_decode_seqs == 1
    assert run(s, batch) == [("a", 1), ("b", 18)]
    assert step(s) == [("a", 1), ("b", 1)]


def test_step_shape_counts_prefill_decode_and_context() -> None:
    s = make()
    s.add(seq("a", 10))
    step(s)
    s.add(seq("b", 6, first=500))
    shape = step_shape(s.schedule())
    assert (shape.num_prefill_tokens, shape.num_decode_seqs, shape.num_context_tokens) == (6, 1, 10)


def test_max_num_seqs_limits_the_batch() -> None:
    s = make(SimEngineConfig(max_model_len=64, kv_cache_tokens=256, block_size=4, max_num_seqs=2))
    for i in range(3):
        s.add(seq(str(i), 4, first=100 * i))
    assert [name for name, _ in step(s)] == ["0", "1"]
    assert len(s.waiting) == 1


def test_requests_wait_while_kv_is_full_then_run() -> None:
    s = make()  # 16 blocks of 4 tokens
    s.add(seq("big", 61))
    s.add(seq("next", 8, first=900))
    assert step(s) == [("big", 32)]
    assert step(s) == [("big", 29)]  # 3 tokens of budget left, but no free block for "next"
    assert [q.request_id for q in s.waiting] == ["next"]
    assert s.block_manager.usage == 1.0
    s.abort("big")
    assert step(s) == [("next", 8)]


def test_prefix_hit_skips_prefill_and_is_counted_once() -> None:
    s = make()
    s.add(seq("a", 18))
    step(s)
    s.abort("a")
    again = seq("b", 18)
    s.add(again)
    assert step(s) == [("b", 2)]  # 4 full blocks (16 tokens) cached
    assert again.num_cached_tokens == 16
    bm = s.block_manager
    assert (bm.prefix_cache_queries, bm.prefix_cache_hits) == (36, 16)


def test_full_hit_still_computes_the_last_token() -> None:
    s = make()
    s.add(seq("a", 16))
    step(s)
    s.abort("a")
    b = seq("b", 16)
    s.add(b)
    assert step(s) == [("b", 4)]  # last block recomputed: logits of the last token are needed
    assert b.num_cached_tokens == 12


def test_generated_blocks_are_cached_for_the_next_turn() -> None:
    s = make()
    a = seq("a", 4)
    s.add(a)
    for _ in range(5):
        step(s, new_token=42)
    assert a.num_computed_tokens == 8
    history = list(a.token_ids[:8])
    s.abort("a")
    b = Sequence("b", [*history, 1, 2, 3], SamplingParams())
    s.add(b)
    step(s)
    assert b.num_cached_tokens == 8


def test_preemption_when_decode_needs_a_block() -> None:
    s = make(SimEngineConfig(max_model_len=16, kv_cache_tokens=16, block_size=4,
                             max_num_batched_tokens=32, max_num_seqs=4))
    s.add(seq("a", 8, max_tokens=8))
    s.add(seq("b", 8, first=500, max_tokens=8))
    assert step(s) == [("a", 8), ("b", 8)]  # 4 blocks: all used, each has 9 tokens now
    assert step(s) == [("a", 1)]  # a needs a 3rd block: b (newest) is preempted
    assert s.num_preemptions == 1
    assert [q.request_id for q in s.waiting] == ["b"]
    assert s.waiting[0].num_computed_tokens == 0 and s.waiting[0].block_table == []


def test_abort_frees_blocks_everywhere() -> None:
    s = make()
    a, b = seq("a", 30), seq("b", 30, first=700)
    s.add(a)
    s.add(b)
    step(s)
    s.abort("a")
    s.abort("b")
    assert s.block_manager.usage == 0.0 and not s.running and not s.waiting
    assert a.finish_reason == "abort"
