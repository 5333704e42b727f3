"""Sampler: next token per row of logits — greedy batched, random rows with their own generator."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dpserve.serving.engine_client import SamplingParams


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A per-request generator: seeded requests reproduce whatever batch they land in."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def sample(logits: torch.Tensor, params: Sequence[SamplingParams],
           generators: Sequence[torch.Generator | None]) -> list[int]:
    """logits [S, V] float32 → one token id per row."""
    tokens = logits.argmax(dim=-1).tolist()  # greedy for every row; random rows overwritten below
    for row, (p, gen) in enumerate(zip(params, generators, strict=True)):
        if p.temperature > 0:
            tokens[row] = _sample_row(logits[row], p, gen)
    return [int(t) for t in tokens]


def _sample_row(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    scaled = logits / p.temperature  # [V]
    if p.top_k is not None and 0 < p.top_k < scaled.shape[0]:
        kth = torch.topk(scaled, p.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens before it already cover top_p (the first always stays)
        drop = (probs.cumsum(-1) - probs) > p.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.empty_like(scaled).scatter_(0, order, sorted_logits)
    probs = scaled.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=gen).item())
