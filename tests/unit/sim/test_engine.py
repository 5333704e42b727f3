"""SimEngine as an EngineClient: deltas, finish reasons, determinism, abort, stats."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from dpserve.serving.engine_client import GenerateRequest, SamplingParams, TokenDelta
from dpserve.sim.config import SimEngineConfig, TimeModelConfig
from dpserve.sim.engine import SimEngine
from dpserve.sim.tokenizer import EOS_ID


def config(**kw: object) -> SimEngineConfig:
    base: dict[str, object] = {"max_model_len": 256, "kv_cache_tokens": 1024, "block_size": 4,
                               "time": TimeModelConfig(time_scale=1000.0)}
    return SimEngineConfig(**{**base, **kw})


@pytest.fixture
async def engine() -> AsyncIterator[SimEngine]:
    eng = SimEngine(config())
    await eng.start()
    yield eng
    await eng.stop()


async def run(eng: SimEngine, prompt: list[int], **sampling: object) -> list[TokenDelta]:
    req = GenerateRequest("r", prompt, SamplingParams(**sampling))
    return [d async for d in eng.generate(req)]


def tokens(deltas: list[TokenDelta]) -> list[int]:
    return [t for d in deltas for t in d.new_token_ids]


async def test_generates_max_tokens_then_length(engine: SimEngine) -> None:
    deltas = await run(engine, list(range(10, 30)), max_tokens=5)
    assert len(tokens(deltas)) == 5
    assert deltas[-1].finish_reason == "length"
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[0].num_prompt_tokens == 20


async def test_same_seed_same_tokens_and_greedy_is_deterministic(engine: SimEngine) -> None:
    a = tokens(await run(engine, [5, 6, 7], max_tokens=6, seed=1))
    b = tokens(await run(engine, [5, 6, 7], max_tokens=6, seed=1))
    c = tokens(await run(engine, [5, 6, 7], max_tokens=6, seed=2))
    assert a == b and a != c
    g1 = tokens(await run(engine, [5, 6, 8], max_tokens=6, temperature=0.0))
    g2 = tokens(await run(engine, [5, 6, 8], max_tokens=6, temperature=0.0))
    assert g1 == g2


async def test_repeated_prompt_reports_cached_tokens(engine: SimEngine) -> None:
    prompt = list(range(100, 150))
    first = await run(engine, prompt, max_tokens=2)
    second = await run(engine, prompt, max_tokens=2)
    assert first[0].num_cached_tokens == 0
    assert second[0].num_cached_tokens == 48
    stats = engine.stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (100, 48)


async def test_stop_token_ids_and_eos() -> None:
    eng = SimEngine(config(natural_output_len=1))
    await eng.start()
    try:
        deltas = await run(eng, [1, 2, 3], max_tokens=10)
        assert tokens(deltas) == [EOS_ID] and deltas[-1].finish_reason == "stop"
        ignored = await run(eng, [1, 2, 3], max_tokens=4, ignore_eos=True, seed=3)
        assert len(tokens(ignored)) == 4 and ignored[-1].finish_reason == "length"
        stop_at = tokens(ignored)[1]
        stopped = await run(eng, [1, 2, 3], max_tokens=4, ignore_eos=True, seed=3, stop_token_ids=(stop_at,))
        assert tokens(stopped) == tokens(ignored)[:2] and stopped[-1].finish_reason == "stop"
    finally:
        await eng.stop()


async def test_natural_length_ends_with_eos_between_half_and_one_and_a_half_mean() -> None:
    eng = SimEngine(config(natural_output_len=20))
    await eng.start()
    try:
        lengths = set()
        for seed in range(30):
            deltas = await run(eng, [1, 2, 3], max_tokens=100, seed=seed)
            assert tokens(deltas)[-1] == EOS_ID and deltas[-1].finish_reason == "stop"
            lengths.add(len(tokens(deltas)))
        assert min(lengths) >= 10 and max(lengths) <= 30 and len(lengths) > 5
        short = await run(eng, [1, 2, 3], max_tokens=5, seed=1)
        assert len(tokens(short)) == 5 and short[-1].finish_reason == "length"
    finally:
        await eng.stop()


async def test_closing_the_iterator_aborts_and_frees(engine: SimEngine) -> None:
    gen = engine.generate(GenerateRequest("r", list(range(40)), SamplingParams(max_tokens=200)))
    await anext(gen)
    assert engine.stats().num_running == 1 and engine.stats().kv_cache_usage > 0
    await gen.aclose()
    stats = engine.stats()
    assert (stats.num_running, stats.num_waiting, stats.kv_cache_usage) == (0, 0, 0.0)


async def test_concurrent_requests_batch_together(engine: SimEngine) -> None:
    results = await asyncio.gather(*(run(engine, [i, i + 1, i + 2], max_tokens=8) for i in range(10)))
    assert all(len(tokens(r)) == 8 for r in results)
    assert engine.stats().num_running == 0


async def test_stop_aborts_waiting_consumers() -> None:
    eng = SimEngine(config(time=TimeModelConfig(time_scale=0.01)))  # very slow steps
    await eng.start()
    gen = eng.generate(GenerateRequest("r", [1, 2], SamplingParams(max_tokens=5)))
    task = asyncio.create_task(anext(gen))
    await asyncio.sleep(0.01)
    await eng.stop()
    delta = await asyncio.wait_for(task, 5)
    assert delta.finish_reason == "abort"
    with contextlib.suppress(StopAsyncIteration):
        await gen.aclose()


async def test_a_request_that_fails_in_the_step_loop_fails_alone(engine: SimEngine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real_sample = engine._sample

    def sample(seq: object) -> int:
        if getattr(seq, "request_id", None) == "doomed":
            raise ZeroDivisionError("a bug this request reaches")
        return real_sample(seq)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_sample", sample)
    request = GenerateRequest("doomed", [1, 2, 3], SamplingParams(max_tokens=5))
    doomed = [d async for d in engine.generate(request)]
    assert doomed[-1].finish_reason == "abort" and doomed[-1].error is not None
    assert "a bug" in doomed[-1].error.message and not doomed[-1].error.engine_down
    assert engine.stats().num_running == 0  # freed, and the step loop is still alive:
    assert len(tokens(await run(engine, [4, 5, 6], max_tokens=3))) == 3
