"""How long one continuous-batching step takes (pure; no clock).

step_s = base + prefill_tokens × per_prefill_token + decode_seqs × per_decode_seq
         + context_tokens × per_context_token

Default constants model Llama-3-8B (bf16, 16.1 GB of weights, 32 layers, 8 KV heads × 128 dims)
served by vLLM on one H100 SXM (3.35 TB/s HBM, 989 TFLOP/s dense bf16):
- base 7 ms: every step reads all weights once, 16.1 GB / ~3 TB/s achieved ≈ 5.4 ms, plus
  ~1.5 ms of scheduling, sampling and kernel launches — vLLM's c=1 ITL for 8B on H100 is ~7 ms.
- prefill 30 µs/token: 2 × 8e9 FLOP = 16 GFLOP per token at ~55% of peak ≈ 29 µs, i.e. about
  33k prefill tokens/s, in line with measured 8B prefill throughput on H100.
- decode 60 µs/sequence: the same 16 GFLOP per decode token (≈ 29 µs) plus per-sequence
  sampling/bookkeeping; a 256-sequence batch then steps in ~22 ms (measured: ~20-30 ms).
- context 44 ns/token: the KV cache of one token is 2 × 32 × 8 × 128 × 2 B = 128 KiB, read once
  per step at ~3 TB/s.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpserve.sim.config import TimeModelConfig


@dataclass(frozen=True)
class StepShape:
    """What one step computes: new prefill tokens, decoding sequences, and the context they read."""

    num_prefill_tokens: int
    num_decode_seqs: int
    num_context_tokens: int


class TimeModel:
    """Step durations in model (unscaled) seconds; divide by `time_scale` for wall time."""

    def __init__(self, config: TimeModelConfig) -> None:
        self._base_s = config.step_base_ms * 1e-3
        self._prefill_token_s = config.prefill_token_us * 1e-6
        self._decode_seq_s = config.decode_seq_us * 1e-6
        self._context_token_s = config.context_token_ns * 1e-9
        self.time_scale = config.time_scale

    def step_time_s(self, shape: StepShape) -> float:
        if shape.num_prefill_tokens == 0 and shape.num_decode_seqs == 0:
            return 0.0
        return (self._base_s + shape.num_prefill_tokens * self._prefill_token_s
                + shape.num_decode_seqs * self._decode_seq_s
                + shape.num_context_tokens * self._context_token_s)

    def wall_time_s(self, shape: StepShape) -> float:
        return self.step_time_s(shape) / self.time_scale
