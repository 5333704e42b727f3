"""Sampler: greedy rows, top-k/top-p truncation, per-request seeded generators."""

from __future__ import annotations

import math
import random

import pytest
import torch

from dpserve.engine.sampler import SampleFailure, make_generator, sample
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


@pytest.mark.parametrize("temperature", [1e-40, 1e-38, 5e-324, 9.9e-6])
@pytest.mark.parametrize(("top_p", "top_k"), [(1.0, None), (0.9, None), (1.0, 5), (1e-300, 1)])
def test_a_temperature_below_the_epsilon_is_greedy_and_never_nan(temperature: float, top_p: float,
                                                                   top_k: int | None) -> None:
    # 1/1e-40 overflows float32: dividing first made inf - inf = NaN and multinomial raise
    logits = torch.tensor([[0.5, 3.0, -2.0, 2.9] * 10])
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k)
    assert sample(logits, [params], [make_generator(0, torch.device("cpu"))]) == [1]


@pytest.mark.parametrize("temperature", [1e-5, 1e-3, 1e-2, 1.0, 2.0, 1e6, 1e300])
def test_any_positive_temperature_samples_a_real_token(temperature: float) -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * 30
    params = [SamplingParams(temperature=temperature, top_p=p, top_k=k) for p, k in
              ((1.0, None), (0.5, 3), (1e-9, 100))]
    gens = [make_generator(i, torch.device("cpu")) for i in range(3)]
    tokens = sample(logits, params, gens)
    assert all(isinstance(t, int) and 0 <= t < 50 for t in tokens)
    if temperature <= 1e-3:  # colder than any gap between these logits: the best token
        assert tokens == logits.argmax(-1).tolist()


def test_inf_and_nan_logits_are_tamed_and_a_row_without_any_fails_alone() -> None:
    nan, inf = math.nan, math.inf
    logits = torch.tensor([[nan, 1.0, inf, 0.0], [-inf, nan, 2.0, -inf], [nan, nan, nan, nan],
                           [1.0, 2.0, 3.0, 4.0]])
    params = [SamplingParams(temperature=0.7), SamplingParams(temperature=1.0, top_p=0.5),
              SamplingParams(temperature=1.0), SamplingParams(temperature=0.0)]
    gens = [make_generator(i, torch.device("cpu")) for i in range(3)] + [None]
    tokens = sample(logits, params, gens)
    assert tokens[0] == 2  # +inf is the largest finite value: it dominates, it does not poison
    assert tokens[1] == 2  # NaN is never chosen
    assert isinstance(tokens[2], SampleFailure)  # nothing usable: this request fails, not the batch
    assert tokens[3] == 3


@pytest.mark.parametrize("seed", [-(2**63), -1, 0, 2**63 - 1])
def test_extreme_seeds_make_generators(seed: int) -> None:
    gen = make_generator(seed, torch.device("cpu"))
    assert isinstance(sample(torch.zeros(1, 10), [SamplingParams(seed=seed)], [gen])[0], int)


def test_random_parameters_never_raise() -> None:
    rng = random.Random(0)
    for _ in range(100):
        logits = torch.randn(2, 64) * rng.choice([1e-30, 1.0, 1e3, 1e30])
        params = [SamplingParams(temperature=rng.choice([0.0, 1e-45, 1e-7, 1e-2, 0.5, 7.0, 1e38]),
                                 top_p=rng.choice([1e-300, 0.1, 0.99, 1.0]),
                                 top_k=rng.choice([None, 1, 2, 63, 64, 10**9])) for _ in range(2)]
        tokens = sample(logits, params, [make_generator(rng.randrange(2**32), torch.device("cpu"))] * 2)
        assert all(isinstance(t, int) and 0 <= t < 64 for t in tokens)
