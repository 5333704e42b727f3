"""Sampler: greedy rows, top-k/top-p truncation, per-request seeded generators."""

from __future__ import annotations

import torch

from dpserve.engine.sampler import make_generator, sample
from dpserve.serving.engine_client import SamplingParams


def logits_row(values: list[float]) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float32)


def test_greedy_takes_argmax_per_row() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]])
    greedy = SamplingParams(temperature=0.0)
    assert sample(logits, [greedy, greedy], [None, None]) == [1, 0]


def test_top_k_one_is_greedy_even_at_high_temperature() -> None:
    params = SamplingParams(temperature=5.0, top_k=1)
    gen = make_generator(0, torch.device("cpu"))
    draws = {sample(logits_row([0.0, 0.1, 0.2, 0.05]), [params], [gen])[0] for _ in range(50)}
    assert draws == {2}


def test_top_p_keeps_only_the_nucleus() -> None:
    # probabilities ~ [0.70, 0.26, 0.04]: top_p=0.5 keeps token 0 only, top_p=0.8 keeps 0 and 1
    logits = logits_row([3.0, 2.0, 0.1])
    gen = make_generator(1, torch.device("cpu"))
    narrow = {sample(logits, [SamplingParams(temperature=1.0, top_p=0.5)], [gen])[0] for _ in range(100)}
    wide = {sample(logits, [SamplingParams(temperature=1.0, top_p=0.8)], [gen])[0] for _ in range(300)}
    assert narrow == {0}
    assert wide == {0, 1}


def test_same_seed_same_draws_different_seed_differs() -> None:
    logits = torch.zeros(1, 1000)
    params = SamplingParams(temperature=1.0, seed=7)

    def draws(seed: int) -> list[int]:
        gen = make_generator(seed, torch.device("cpu"))
        return [sample(logits, [params], [gen])[0] for _ in range(20)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_sampling_is_roughly_proportional_to_probabilities() -> None:
    logits = torch.log(torch.tensor([[0.2, 0.8]]))
    gen = make_generator(3, torch.device("cpu"))
    params = SamplingParams(temperature=1.0)
    ones = sum(sample(logits, [params], [gen])[0] for _ in range(2000))
    assert abs(ones / 2000 - 0.8) < 0.04  # binomial sd ~0.009: > 4 sd margin
