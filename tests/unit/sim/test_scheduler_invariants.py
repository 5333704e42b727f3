"""Randomised runs of the sim's scheduler (the engine's, with the sim's limits) under KV pressure
(most seeds preempt), with aborts and shared prefixes: every request completes with its exact
token count, no block leaks, limits always hold (seeded, so failures reproduce)."""

from __future__ import annotations

import random

import pytest

from dpserve.engine.scheduler import Scheduler
from dpserve.engine.sequence import Sequence
from dpserve.serving.engine_client import SamplingParams
from dpserve.sim.config import SimEngineConfig
from dpserve.sim.engine import build_scheduler


def check_limits(s: Scheduler, config: SimEngineConfig) -> None:
    assert len(s.running) <= config.max_num_seqs
    # Distinct blocks held by running sequences (shared prefix blocks once) = blocks not free.
    held = {b for q in s.running for b in q.block_table}
    assert len(held) == config.num_blocks - s.block_manager.num_free_blocks
    s.block_manager.check_consistency(s.running + list(s.waiting))
    for q in s.running:
        assert len(q.block_table) * config.block_size >= q.num_computed_tokens


@pytest.mark.parametrize("seed", range(6))
def test_random_workload_completes_exactly_without_leaks(seed: int) -> None:
    rng = random.Random(seed)
    config = SimEngineConfig(max_model_len=96, kv_cache_tokens=96, block_size=4,
                             max_num_batched_tokens=rng.choice([8, 24, 64]), max_num_seqs=rng.choice([2, 5]))
    s = build_scheduler(config)
    shared = [rng.randrange(1000) for _ in range(40)]
    pending = []
    for i in range(25):
        prompt = shared[:rng.randrange(0, 40)] + [rng.randrange(1000) for _ in range(rng.randrange(1, 30))]
        pending.append(Sequence(str(i), prompt, SamplingParams(max_tokens=rng.randrange(1, 20))))
    expected = {q.request_id: len(q.token_ids) + q.sampling.max_tokens for q in pending}
    finished: list[Sequence] = []
    aborted: list[Sequence] = []
    for _ in range(5000):
        if pending and rng.random() < 0.6:
            s.add(pending.pop(0))
        if s.running and rng.random() < 0.02:
            victim = rng.choice(s.running)
            s.abort(victim.request_id)
            aborted.append(victim)
        batch = s.schedule()
        assert sum(it.num_new_tokens for it in batch) <= config.max_num_batched_tokens
        sampled = {it.seq: 1 + rng.randrange(1000) for it in batch if it.samples}  # 0 is the sim's EOS
        finished += [q for q in s.postprocess(batch, sampled) if q.is_finished]
        check_limits(s, config)
        if not pending and not s.running and not s.waiting:
            break
    assert len(finished) + len(aborted) == 25
    assert all(len(q.token_ids) == expected[q.request_id] for q in finished)
    bm = s.block_manager
    assert bm.usage == 0.0 and bm.num_free_blocks == config.num_blocks
    assert 0 < bm.prefix_cache_hits <= bm.prefix_cache_queries  # prompts share a prefix
