"""A predicted layout as `dpserve sim` flags: the sim then steps with the very coefficients the plan used.

The planner's per-GPU costs are handed over as whole-model-on-one-GPU figures plus TP, PP and the
links; the sim shards them with the same `formulas.shard_costs`, so its step time equals the
prediction's (tests check this). Two things the sim cannot express are approximated: MoE expert
reads are frozen at the predicted batch's share, and DP-attention layouts are not simulated.
"""

from __future__ import annotations

import math

from dpserve.planner import formulas as f
from dpserve.planner.predict import Prediction, Setting


def sim_flags(s: Setting, p: Prediction, time_scale: float, length_range: float = 0.0) -> list[str]:
    """`dpserve sim` flags for one replica of `p`'s layout (KV capacity and batch cap included);
    requests may be up to (1 + length_range) × the workload's lengths."""
    assert p.fits and p.memory is not None and p.load is not None
    if p.layout.dp_attention:
        raise ValueError("the sim has no DP-attention mode")
    a, asm, lay = s.arch, s.assumptions, p.layout
    full = f.replica_costs(a, s.gpu, s.weight_bytes, s.kv_bytes, asm, s.dtype)
    micro_batches = min(lay.pp, max(1.0, p.load.batch))
    tokens = p.load.batch * (1 + s.workload.prompt_len / s.workload.output_len) / micro_batches
    experts = full.experts_s * f.expert_share(tokens, full.num_experts, full.experts_per_token)
    links = f.layout_links(s.gpu, lay.tp, lay.pp, s.gpus_per_node, asm)
    shape = s.workload.shape
    max_num_seqs, max_tokens = f.engine_limits(asm, s.gpu)
    values = {
        "--tp-size": lay.tp, "--pp-size": lay.pp,
        "--step-base-ms": (full.host_step_s + full.weights_s + experts) * 1e3,
        "--host-step-ms": full.host_step_s * 1e3,
        "--prefill-token-us": full.prefill_token_s * 1e6,
        "--decode-seq-us": (full.host_seq_s + full.decode_token_s) * 1e6,
        "--host-seq-us": full.host_seq_s * 1e6,
        "--context-token-ns": full.context_token_s * 1e9,
        "--num-layers": a.num_layers, "--hidden-size": a.hidden_size,
        "--num-kv-heads": 1 if a.is_mla else a.num_kv_heads,
        "--link-gb-s": links.tp_bytes_s / 1e9, "--link-latency-us": links.tp_step_latency_s * 1e6,
        "--allreduce-launch-us": links.tp_launch_s * 1e6,
        **({"--nvls-gb-s": links.tp_nvls_bytes_s / 1e9} if links.tp_nvls_bytes_s else {}),
        "--pp-link-gb-s": links.pp_bytes_s / 1e9, "--handoff-us": links.pp_latency_s * 1e6,
        "--kv-cache-tokens": p.memory.kv_tokens, "--max-num-seqs": max_num_seqs,
        "--max-num-batched-tokens": max_tokens,
        # a little over the longest request: the bench's prompts are words, ~1 sim token each
        "--max-model-len": min(p.memory.kv_tokens, math.ceil(shape.seq_tokens * (1 + length_range)) + 64),
        "--natural-output-len": 0,
        "--time-scale": time_scale,
    }
    return [str(x) for kv in values.items() for x in kv]
