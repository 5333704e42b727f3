"""Engine-level scenarios: batch invariance, chunked prefill, preemption, prefix cache, seeded sampling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dpserve.serving.engine_client import SamplingParams

pytestmark = [pytest.mark.model, pytest.mark.slow]

GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def engine(make_engine: Callable[..., Any]) -> Any:
    return make_engine()


@pytest.fixture(scope="module")
def alone(engine: Any, chat_prompts: list[list[int]]) -> list[list[int]]:
    """Each prompt's greedy output when it runs by itself (prefix cache cleared by a fresh engine's
    first request; later ones may hit it, which is itself part of the invariance)."""
    return [engine.generate([p], GREEDY)[0] for p in chat_prompts]


def test_batch_of_eight_mixed_lengths_matches_alone(engine: Any, chat_prompts: list[list[int]],
                                                    alone: list[list[int]]) -> None:
    hits_before = engine.block_manager.prefix_cache_hits
    assert len({len(p) for p in chat_prompts}) > 3  # genuinely mixed lengths
    assert engine.generate(chat_prompts, GREEDY) == alone
    assert engine.block_manager.prefix_cache_hits > hits_before  # shared system prompt was reused


def test_small_chunked_prefill_matches_alone(make_engine: Callable[..., Any],
                                             chat_prompts: list[list[int]], alone: list[list[int]]) -> None:
    chunked = make_engine(max_num_batched_tokens=7, enable_prefix_caching=False)
    assert chunked.generate(chat_prompts, GREEDY) == alone
    assert chunked.block_manager.prefix_cache_hits == 0


def test_preemption_under_small_kv_keeps_outputs(
        make_engine: Callable[..., Any], chat_prompts: list[list[int]], alone: list[list[int]]) -> None:
    longest = max(len(p) for p in chat_prompts) + GREEDY.max_tokens
    tight = make_engine(kv_cache_tokens=2 * longest + 16, block_size=16)
    assert tight.generate(chat_prompts, GREEDY) == alone
    assert tight.scheduler.num_preemptions > 0
    tight.block_manager.check_consistency([])


def test_repeated_long_prompt_hits_prefix_cache(engine: Any, tokenizer: Any) -> None:
    text = " ".join(f"Fact {i}: the number {i} squared is {i * i}." for i in range(40))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": text + " Summarise."}])
    params = SamplingParams(max_tokens=4, temperature=0.0)
    before = engine.num_prefill_tokens_computed
    first = engine.generate([prompt], params)
    cold = engine.num_prefill_tokens_computed - before
    hits_before = engine.block_manager.prefix_cache_hits
    engine.add_request("again", prompt, params)
    outputs = []
    while engine.has_work:
        outputs.extend(engine.step())
    warm = engine.num_prefill_tokens_computed - before - cold
    assert outputs[0][1].num_cached_tokens >= len(prompt) - engine.config.block_size
    assert engine.block_manager.prefix_cache_hits - hits_before == outputs[0][1].num_cached_tokens
    assert warm < cold / 10
    assert [t for _, d in outputs for t in d.new_token_ids] == first[0]


def test_seeded_sampling_reproducible_alone_and_batched(engine: Any, chat_prompts: list[list[int]]) -> None:
    seeded = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.9, top_k=40, seed=1234, ignore_eos=True)
    solo = engine.generate([chat_prompts[0]], seeded)[0]
    others = [SamplingParams(max_tokens=16, temperature=1.0, ignore_eos=True)] * 3
    batched = engine.generate(chat_prompts[:4], [seeded, *others])[0]
    assert solo == batched
    other_seed = engine.generate([chat_prompts[0]], SamplingParams(
        max_tokens=16, temperature=0.9, top_p=0.9, top_k=40, seed=99, ignore_eos=True))[0]
    assert other_seed != solo


def test_stop_token_ids_and_eos(engine: Any, chat_prompts: list[list[int]]) -> None:
    greedy = engine.generate([chat_prompts[0]], SamplingParams(max_tokens=64, temperature=0.0))[0]
    assert greedy[-1] in engine.scheduler.eos_token_ids  # the bundled model ends its answer
    stop_at = greedy[2]
    stopped = engine.generate([chat_prompts[0]], SamplingParams(
        max_tokens=64, temperature=0.0, stop_token_ids=(stop_at,)))[0]
    assert stopped == greedy[:greedy.index(stop_at) + 1]
