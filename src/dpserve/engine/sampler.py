"""Sampler: next token per row of logits — greedy batched, random rows with their own generator.

Numerically safe for any SamplingParams: logits are shifted by their maximum before dividing by
the temperature (so 1/T can no longer overflow into inf - inf = NaN, which made torch.multinomial
raise and took the engine core down), +inf/NaN logits are sanitised, and a temperature below
vLLM's epsilon is greedy. A row that still cannot be sampled (no finite logit at all) comes back
as a SampleFailure for that request alone; the other rows of the batch are unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dpserve.serving.engine_client import SamplingParams
from dpserve.serving.sampling_defaults import GREEDY_BELOW_TEMPERATURE


@dataclass(frozen=True)
class SampleFailure:
    """Why one row got no token; its request fails, the batch goes on."""

    reason: str


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A per-request generator: seeded requests reproduce whatever batch they land in."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def is_greedy(p: SamplingParams) -> bool:
    return p.temperature < GREEDY_BELOW_TEMPERATURE


def sample(logits: torch.Tensor, params: Sequence[SamplingParams],
           generators: Sequence[torch.Generator | None]) -> list[int | SampleFailure]:
    """logits [S, V] float32 → one token id (or the reason it has none) per row."""
    # One pass finds both the greedy tokens and the rows to distrust: NaN and ±inf show up in
    # a row's maximum, so only those rows pay for sanitising (a whole-batch nan_to_num costs
    # several times the argmax itself, on every step).
    best, greedy = logits.max(dim=-1)  # [S], [S]
    tokens: list[int | SampleFailure] = [int(t) for t in greedy.tolist()]
    suspect = set((~torch.isfinite(best)).nonzero().flatten().tolist())
    for row, (p, gen) in enumerate(zip(params, generators, strict=True)):
        row_logits = _sanitised(logits[row]) if row in suspect else logits[row]  # [V]
        if row in suspect:
            if not bool(torch.isfinite(row_logits).any()):
                tokens[row] = SampleFailure("the model produced no finite logit for this request")
                continue
            tokens[row] = int(row_logits.argmax())
        if not is_greedy(p):
            try:
                tokens[row] = _sample_row(row_logits, p, gen)
            except RuntimeError as exc:  # torch refusing a distribution: this request only
                tokens[row] = SampleFailure(f"sampling failed: {exc}")
    return tokens


def _sanitised(logits: torch.Tensor) -> torch.Tensor:
    """NaN → -inf (never chosen), +inf → the largest finite value (chosen, and still finite)."""
    big = torch.finfo(logits.dtype).max
    return torch.nan_to_num(logits, nan=float("-inf"), posinf=big, neginf=float("-inf"))


def _sample_row(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    # Shift first: the best logit becomes 0 and stays 0 after /T, so softmax always has a finite
    # maximum; tiny temperatures only push the others towards -inf, which is exact, not NaN.
    scaled = (logits - logits.max()) / p.temperature  # [V]
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
