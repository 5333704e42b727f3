"""How long one continuous-batching step takes (pure; no clock).

At TP = PP = 1, with the host shares `--host-step-ms` and `--host-seq-us` split off:
step_s = host_step + decode_seqs × host_seq
         + max(weights, prefill_tokens × per_prefill_token + decode_seqs × (per_decode_seq − host_seq))
         + context_tokens × per_context_token
where weights = base − host_step: a linear layer streams its weights while its tensor cores work
(a roofline), so at small batches the math hides under the weight read.

Default constants model Llama-3-8B (bf16, 16.1 GB of weights, 32 layers, 8 KV heads × 128 dims)
served by vLLM on one H100 SXM (3.35 TB/s HBM, 989 TFLOP/s dense bf16):
- base 7 ms: every step reads all weights once, 16.1 GB / ~3 TB/s achieved ≈ 5.4 ms, plus
  ~1.5 ms of scheduling, sampling and kernel launches (`--host-step-ms`) — vLLM's c=1 ITL for 8B
  on H100 is ~7 ms.
- prefill 30 µs/token: 2 × 8e9 FLOP = 16 GFLOP per token at ~55% of peak ≈ 29 µs, i.e. about
  33k prefill tokens/s, in line with measured 8B prefill throughput on H100.
- decode 60 µs/sequence: the same 16 GFLOP per decode token (≈ 29 µs) plus per-sequence
  sampling/bookkeeping (`--host-seq-us` 30); a 256-sequence batch with 1,000-token contexts then
  steps in 1.5 + 7.7 + max(5.5, 7.7) + 11.3 ≈ 28 ms (measured: ~20-30 ms).
- context 44 ns/token: the KV cache of one token is 2 × 32 × 8 × 128 × 2 B = 128 KiB, read once
  per step at ~3 TB/s.

With `--tp-size`/`--pp-size` these whole-model costs are sharded by the planner's formula
(`dpserve.planner.formulas.shard_costs`: device terms ÷ TP, stages, all-reduces, hand-offs) and a
step is `formulas.step_time_s` — the same arithmetic `dpserve plan` predicts with.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpserve.planner import formulas
from dpserve.sim.config import TimeModelConfig


@dataclass(frozen=True)
class StepShape:
    """What one step computes: new prefill tokens, decoding sequences, and the context they read."""

    num_prefill_tokens: int
    num_decode_seqs: int
    num_context_tokens: int


def step_costs(config: TimeModelConfig) -> formulas.StepCosts:
    """The flags as the planner's step coefficients: whole-model costs, then sharded over TP × PP."""
    c = config
    host_step_ms = min(c.host_step_ms, c.step_base_ms)
    host_seq_us = min(c.host_seq_us, c.decode_seq_us)
    full = formulas.ReplicaCosts(
        host_step_s=host_step_ms * 1e-3, host_seq_s=host_seq_us * 1e-6,
        weights_s=(c.step_base_ms - host_step_ms) * 1e-3, experts_s=0.0,
        prefill_token_s=c.prefill_token_us * 1e-6, decode_token_s=(c.decode_seq_us - host_seq_us) * 1e-6,
        context_token_s=c.context_token_ns * 1e-9)
    links = formulas.Links(c.link_gb_s * 1e9, c.link_latency_us * 1e-6,
                           (c.pp_link_gb_s or c.link_gb_s) * 1e9, c.handoff_us * 1e-6,
                           c.allreduce_launch_us * 1e-6, c.nvls_gb_s * 1e9 if c.nvls_gb_s else None)
    return formulas.shard_costs(full, tp=c.tp_size, pp=c.pp_size, num_layers=c.num_layers,
                                hidden_size=c.hidden_size, kv_split=min(c.tp_size, c.num_kv_heads),
                                links=links)


class TimeModel:
    """Step durations in model (unscaled) seconds; divide by `time_scale` for wall time."""

    def __init__(self, config: TimeModelConfig) -> None:
        self.costs = step_costs(config)
        self.time_scale = config.time_scale

    def step_time_s(self, shape: StepShape) -> float:
        return formulas.step_time_s(self.costs, shape.num_prefill_tokens, shape.num_decode_seqs,
                                    shape.num_context_tokens)

    def wall_time_s(self, shape: StepShape) -> float:
        return self.step_time_s(shape) / self.time_scale
