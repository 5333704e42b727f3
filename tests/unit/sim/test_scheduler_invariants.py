"""Randomised runs of the sim scheduler under KV pressure (most seeds preempt), with aborts and
shared prefixes: every request completes with its exact token count, no block leaks, limits
always hold (seeded, so failures reproduce)."""

from __future__ import annotations

import random

import pytest

from dpserve.serving.engine_client import SamplingParams
from dpserve.sim.config import SimEngineConfig
from dpserve.sim.scheduler import SimScheduler, SimSequence


def check_limits(s: SimScheduler, config: SimEngineConfig) -> None:
    assert len(s.running) <= config.max_num_seqs
    # Distinct blocks held by running sequences (shared prefix blocks once) = blocks not free.
    plain = sum(1 for q in s.running for ref in q.blocks if ref is None)
    shared = {ref for q in s.running for ref in q.blocks if ref is not None}
    assert plain + len(shared) == config.num_blocks - s.pool.num_free
    for q in s.running:
        assert len(q.blocks) * config.block_size >= q.num_computed


@pytest.mark.parametrize("seed", range(6))
def test_random_workload_completes_exactly_without_leaks(seed: int) -> None:
    rng = random.Random(seed)
    config = SimEngineConfig(max_model_len=96, kv_cache_tokens=96, block_size=4,
                             max_num_batched_tokens=rng.choice([8, 24, 64]), max_num_seqs=rng.choice([2, 5]))
    s = SimScheduler(config)
    shared = [rng.randrange(1000) for _ in range(40)]
    pending = []
    for i in range(25):
        prompt = shared[:rng.randrange(0, 40)] + [rng.randrange(1000) for _ in range(rng.randrange(1, 30))]
        pending.append(SimSequence(str(i), prompt, SamplingParams(max_tokens=rng.randrange(1, 20))))
    expected = {q.request_id: len(q.token_ids) + q.sampling.max_tokens for q in pending}
    finished: list[SimSequence] = []
    aborted: list[SimSequence] = []
    for _ in range(5000):
        if pending and rng.random() < 0.6:
            s.add(pending.pop(0))
        if s.running and rng.random() < 0.02:
            victim = rng.choice(s.running)
            s.abort(victim)
            aborted.append(victim)
        plan = s.schedule()
        assert sum(n for _, n in plan.scheduled) <= config.max_num_batched_tokens
        for q in s.complete(plan):
            q.token_ids.append(rng.randrange(1000))
            if q.num_generated == q.sampling.max_tokens:
                s.finish(q, "length")
                finished.append(q)
        check_limits(s, config)
        if not pending and not s.running and not s.waiting:
            break
    assert len(finished) + len(aborted) == 25
    assert all(len(q.token_ids) == expected[q.request_id] for q in finished)
    assert s.pool.usage == 0.0 and s.pool.num_free == config.num_blocks
    assert 0 < s.prefix_cache_hits <= s.prefix_cache_queries  # prompts share a prefix
