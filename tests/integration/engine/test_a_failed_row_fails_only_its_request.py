"""A token that cannot be sampled (the model gave no finite logit) fails its own request: the
others in the batch go on, its KV blocks are freed, and the engine takes new requests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

import dpserve.engine.model_runner as model_runner
from dpserve.serving.engine_client import SamplingParams

pytestmark = pytest.mark.model


def test_a_nan_row_aborts_that_request_with_the_reason(make_engine: Callable[..., Any],
                                                       chat_prompts: list[list[int]],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(kv_cache_tokens=2048)
    doomed = SamplingParams(max_tokens=8, temperature=0.8, seed=1, ignore_eos=True)
    real_sample = model_runner.sample

    def poisoned(logits: torch.Tensor, params: Sequence[SamplingParams], generators: Any) -> Any:
        rows = [i for i, p in enumerate(params) if p is doomed]
        logits[rows] = float("nan")  # what a numerically broken forward pass would hand over
        return real_sample(logits, params, generators)

    monkeypatch.setattr(model_runner, "sample", poisoned)
    engine.add_request("doomed", chat_prompts[0], doomed)
    engine.add_request("fine", chat_prompts[1], SamplingParams(max_tokens=5, temperature=0.0))
    outputs: dict[str, list[Any]] = {"doomed": [], "fine": []}
    while engine.has_work:
        for rid, delta in engine.step():
            outputs[rid].append(delta)
    [failure] = outputs["doomed"]
    assert (failure.new_token_ids, failure.finish_reason) == ([], "abort")
    assert failure.error is not None and "finite" in failure.error.message
    assert not failure.error.engine_down
    assert [d.finish_reason for d in outputs["fine"]] == [None] * 4 + ["length"]
    assert engine.stats().kv_cache_usage == 0.0  # the failed request's blocks were freed too
    assert len(engine.generate([chat_prompts[2]], SamplingParams(max_tokens=3, temperature=0.0))[0]) == 3
