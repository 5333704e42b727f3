"""Every formula of the planner (and of the sim's sharded time model), pure, with its assumptions.

Units: bytes, seconds, FLOPs, tokens. A layout is DP × TP × PP (+ DP-attention): DP replicas of
TP×PP GPUs each. The serving engine modelled is vLLM-like: continuous batching, chunked prefill
under a per-step token budget, a paged KV cache sized from what memory the weights leave.

A step is a roofline per kernel, summed over the kernels that run one after another: a linear
layer streams its weights while its tensor cores work on the tiles already loaded (Hopper's
warp-specialised GEMMs overlap TMA loads with the MMAs), so it takes max(weights ÷ bandwidth,
math ÷ FLOP/s); attention likewise max(KV read, its math); the TP all-reduce waits for both, and
the host work of vLLM's scheduler runs between steps. It is the model `dpserve sim` runs
(sim/time_model.py builds a `StepCosts` from its flags through `shard_costs`), so `plan --simulate`
compares one model against its own dynamics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dpserve.planner.architecture import ModelArch
from dpserve.planner.hardware import GpuSpec

GIB = 1024**3

# Bytes per weight. int4: AWQ/GPTQ with group size 128 stores one fp16 scale per 128 weights.
WEIGHT_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int4": 0.5 + 2 / 128}
KV_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}
ACT_BYTES = 2.0  # activations and all-reduce messages travel in bf16


@dataclass(frozen=True)
class Assumptions:
    """The constants behind every prediction, each with its reason. Change them here, nowhere else."""

    # vLLM's default --gpu-memory-utilization: the engine sizes itself (weights, activations,
    # KV cache) inside 90% of the GPU; the rest is the CUDA context and fragmentation margin.
    gpu_memory_utilization: float = 0.90
    # Outside vLLM's profiled forward pass: CUDA-graph capture (vLLM logs 0.5-1 GiB), NCCL
    # buffers and the sampler's workspace.
    runtime_reserve_bytes: float = 1.0 * GIB
    # Share of peak HBM bandwidth a decode step achieves. Calibrated with the sim's 8B/H100
    # defaults: 16.1 GB of weights per step at ~3 TB/s = 0.9 × 3.35 TB/s.
    hbm_efficiency: float = 0.90
    # Share of dense tensor-core peak that large GEMMs (prefill, big decode batches) achieve:
    # ~55% gives the ~33k prefill tokens/s measured for 8B on one H100.
    mfu: float = 0.55
    # Host work per engine step (scheduling, kernel launches, sampling set-up): vLLM's c=1 ITL
    # for 8B on H100 is ~7 ms, 5.4 ms of which is reading the weights.
    host_step_s: float = 1.5e-3
    # Host work per running sequence per step (sampling, output processing, detokenisation):
    # measured vLLM steps grow ~60 µs per sequence for 8B on H100, ~30 µs of which is GEMM.
    # Neither host term shrinks with TP or PP; DP replicas each run their own.
    host_seq_s: float = 30e-6
    # NCCL reaches ~80% of the per-direction NVLink bandwidth on MB-sized all-reduces: a ring's
    # bus bandwidth on H100 SXM is 365-370 GB/s of the 450 GB/s line rate for 2 to 8 GPUs
    # (github.com/NVIDIA/nccl/issues/1455; NCCL's maintainer in nccl-tests#212: "~20% protocol
    # overhead, 370 GB/s"). With it, 70B FP8 at TP=4 spends ~26% of prefill in all-reduce;
    # measured: 25.5% (ISC 2026 poster, "FP8 Makes Prefill Collective-Bound on H100", vLLM).
    link_efficiency: float = 0.80
    # One all-reduce's fixed cost besides its ring steps (GpuSpec.link_latency_us each): the kernel
    # launch inside the CUDA graph and the cross-GPU flag handshake. NCCL's all-reduce of 128 B to
    # 64 KB on two H100 SXM under CUDA graphs takes ~6 µs (github.com/NVIDIA/nccl/issues/1259) =
    # 5 µs + 2 ring steps of 0.5 µs; on 8 GPUs the same arithmetic gives 12 µs.
    allreduce_launch_s: float = 5e-6
    # NVLink SHARP (GpuSpec.nvls): the NVSwitch adds the shards in the network, so an all-reduce
    # moves each byte once up and once down. NCCL picks it over the ring where it is faster; on
    # 8 H100 its algorithm bandwidth peaks at ~275 GB/s (NCCL's maintainer, nccl-tests#212;
    # 258-273 GB/s for 5-8 GPUs in nccl#1455): 0.6 of the 450 GB/s line rate, vs the ring's
    # 360 × t / (2(t − 1)) = 206 GB/s at t = 8.
    nvls_efficiency: float = 0.60
    # PP stages on different nodes talk over one 400 Gb/s InfiniBand NDR NIC per GPU (DGX H100).
    internode_bytes_s: float = 50e9
    # One PP stage hand-off: send/recv launch and synchronisation.
    handoff_latency_s: float = 10e-6
    # The engine's limits; None: vLLM V1's defaults for an OpenAI server on the GPU (engine_limits).
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None


def engine_limits(asm: Assumptions, gpu: GpuSpec) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens): the ones given, else vLLM V1's for an OpenAI server
    (vllm/engine/arg_utils.py, get_batch_defaults): 1024 sequences and 8192 tokens on GPUs of ≥ 70 GiB
    other than the A100 ("for GPUs like H100 and MI300x, use larger default values"; on the A100
    they cost throughput, vLLM PR #17885), else 256 and 2048."""
    big = gpu.memory_bytes >= 70 * GIB and "a100" not in gpu.name.lower()
    seqs = asm.max_num_seqs if asm.max_num_seqs is not None else (1024 if big else 256)
    tokens = asm.max_num_batched_tokens if asm.max_num_batched_tokens is not None else (8192 if big else 2048)
    return seqs, tokens


# ---------------------------------------------------------------- parameters

@dataclass(frozen=True)
class ParamCounts:
    """Parameters by role (counts, not bytes)."""

    embedding: int
    lm_head: int  # 0 when tied to the embedding (then the embedding is also the output head)
    attention: int  # every layer's attention projections and both layer norms
    dense_mlp: int  # every dense-MLP layer
    shared_experts: int  # every MoE layer's always-on experts
    routed_expert: int  # ONE routed expert, summed over the MoE layers
    num_routed_experts: int
    experts_per_token: int
    router: int
    final_norm: int

    @property
    def routed_experts(self) -> int:
        return self.routed_expert * self.num_routed_experts

    @property
    def total(self) -> int:
        return (self.embedding + self.lm_head + self.attention + self.dense_mlp + self.shared_experts
                + self.routed_experts + self.router + self.final_norm)

    @property
    def streamed(self) -> int:
        """Parameters a decode step reads: all but an untied embedding table (only indexed)."""
        return self.total - (self.embedding if self.lm_head else 0)

    @property
    def matmul_per_token(self) -> int:
        """Parameters one decode token multiplies by (the output head included; top-k experts)."""
        head = self.lm_head or self.embedding
        return (head + self.attention + self.dense_mlp + self.shared_experts + self.router
                + self.routed_expert * self.experts_per_token)


def param_counts(a: ModelArch) -> ParamCounts:
    h = a.hidden_size
    mlp = 3 * h * a.intermediate_size  # gate, up, down (SwiGLU)
    expert = 3 * h * a.moe_intermediate_size
    dense_layers = a.first_dense_layers if a.is_moe else a.num_layers
    return ParamCounts(
        embedding=a.vocab_size * h,
        lm_head=0 if a.tie_word_embeddings else a.vocab_size * h,
        attention=a.num_layers * (_attention_params(a) + 2 * h),
        dense_mlp=dense_layers * mlp,
        shared_experts=a.num_moe_layers * a.num_shared_experts * expert,
        routed_expert=a.num_moe_layers * expert,
        num_routed_experts=a.num_experts,
        experts_per_token=a.experts_per_token,
        router=a.num_moe_layers * h * a.num_experts,
        final_norm=h)


def _attention_params(a: ModelArch) -> int:
    h, heads = a.hidden_size, a.num_heads
    if a.is_mla:
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        q = h * heads * qk
        if a.q_lora_rank:  # low-rank q: down-projection, its norm, up-projection
            q = h * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * heads * qk
        kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank
        kv += a.kv_lora_rank * heads * (a.qk_nope_head_dim + a.v_head_dim)
        return q + kv + heads * a.v_head_dim * h
    q, kv = heads * a.head_dim, a.num_kv_heads * a.head_dim
    params = h * q + 2 * h * kv + q * h
    if a.attention_bias:
        params += q + 2 * kv
    if a.qk_norm:
        params += 2 * a.head_dim
    return params


# ---------------------------------------------------------------- memory

def stage_fraction(num_layers: int, pp: int) -> float:
    """Share of the layers on the largest PP stage (vLLM splits layers as evenly as it can)."""
    return math.ceil(num_layers / pp) / num_layers


def weight_bytes_per_gpu(p: ParamCounts, num_layers: int, tp: int, pp: int, dp_attention: bool,
                         weight_bytes: float) -> float:
    """TP shards every linear and the vocabulary; PP splits the layers. DP-attention keeps a full
    copy of the attention weights on every GPU (each runs attention for its own sequences)."""
    replicated = p.attention if dp_attention else 0
    return (replicated + (p.total - replicated) / tp) * weight_bytes * stage_fraction(num_layers, pp)


def kv_bytes_per_token(a: ModelArch, kv_bytes: float) -> float:
    """The whole model's KV cache for one token. MLA caches one compressed latent (kv_lora_rank)
    plus the shared RoPE key per layer instead of K and V per head."""
    if a.is_mla:
        return a.num_layers * (a.kv_lora_rank + a.qk_rope_head_dim) * kv_bytes
    return 2 * a.num_layers * a.num_kv_heads * a.head_dim * kv_bytes


def kv_shards(a: ModelArch, tp: int, dp_attention: bool) -> int:
    """Ways TP splits each token's KV. GQA: by KV head, each GPU keeping ≥ 1 head (TP beyond the
    KV heads replicates them). MLA's single latent cannot be split: every TP GPU holds all of it.
    DP-attention: each GPU holds whole tokens of its own sequences, so the replica's KV is tp-fold."""
    if dp_attention:
        return tp
    if a.is_mla:
        return 1
    return min(tp, a.num_kv_heads)


def activation_bytes_per_gpu(a: ModelArch, tp: int, max_batched_tokens: int, max_num_seqs: int) -> float:
    """Peak forward temporaries vLLM profiles with a max-num-batched-tokens batch: the MLP's gate/up
    output and activation (3 × intermediate per token, MoE: top-k experts' worth) plus a few
    hidden-size buffers, and the sampler's fp32 logits for max-num-seqs sequences."""
    inter = max(a.intermediate_size if (not a.is_moe or a.first_dense_layers) else 0,
                a.experts_per_token * a.moe_intermediate_size)
    per_token = (3 * inter / tp + 4 * a.hidden_size) * ACT_BYTES
    return max_batched_tokens * per_token + max_num_seqs * a.vocab_size / tp * 4


@dataclass(frozen=True)
class Memory:
    """One GPU's memory budget and the replica's KV capacity."""

    weights_bytes: float  # per GPU
    activation_bytes: float  # per GPU
    reserve_bytes: float  # per GPU (runtime + the utilization margin)
    kv_bytes: float  # per GPU left for the KV cache (may be negative: does not fit)
    kv_tokens: int  # per replica


def memory_budget(a: ModelArch, gpu: GpuSpec, tp: int, pp: int, dp_attention: bool, weight_bytes: float,
                  kv_bytes: float, asm: Assumptions) -> Memory:
    p = param_counts(a)
    weights = weight_bytes_per_gpu(p, a.num_layers, tp, pp, dp_attention, weight_bytes)
    max_seqs, max_tokens = engine_limits(asm, gpu)
    act = activation_bytes_per_gpu(a, tp, max_tokens, max_seqs)
    reserve = gpu.memory_bytes * (1 - asm.gpu_memory_utilization) + asm.runtime_reserve_bytes
    free = gpu.memory_bytes - reserve - weights - act
    # Plain TP: every GPU holds its 1/shards of every token. DP-attention: whole tokens of its own
    # sequences, so the replica holds tp × one GPU's tokens.
    split = 1 if dp_attention else kv_shards(a, tp, False)
    per_token_gpu = kv_bytes_per_token(a, kv_bytes) * stage_fraction(a.num_layers, pp) / split
    tokens_per_gpu = max(0, int(free // per_token_gpu))
    kv_tokens = tokens_per_gpu * (tp if dp_attention else 1)
    return Memory(weights, act, reserve, free, kv_tokens)


def kv_cache_tokens(gpu_memory_bytes: float, weights_bytes: float, kv_bytes_per_token_: float, tp: int,
                    pp: int, kv_split: int, asm: Assumptions = Assumptions()) -> int:
    """KV capacity of a TP×PP replica from raw sizes (the sim's `--gpu-memory-gib`): each GPU keeps
    `utilization × memory − weights/(TP·PP) − runtime reserve` for its 1/(kv_split·PP) of every token.
    Activations are left inside the reserve here (the sim has no model to profile)."""
    free = (gpu_memory_bytes * asm.gpu_memory_utilization - asm.runtime_reserve_bytes
            - weights_bytes / (tp * pp))
    per_token = kv_bytes_per_token_ / (kv_split * pp)
    return max(0, int(free // per_token))


# ---------------------------------------------------------------- step time

@dataclass(frozen=True)
class ReplicaCosts:
    """A whole model on ONE device (TP = PP = 1), seconds."""

    host_step_s: float
    host_seq_s: float
    weights_s: float  # streaming the non-expert weights once
    experts_s: float  # streaming every routed expert once
    prefill_token_s: float  # math per prefill token
    decode_token_s: float  # math per decode token (the output head included)
    context_token_s: float  # attention over one cached token, per sequence per step
    num_experts: int = 0
    experts_per_token: int = 0


@dataclass(frozen=True)
class StepCosts:
    """One replica's step coefficients after sharding; device terms are one stage's GPU."""

    pp: int
    host_step_s: float
    host_seq_s: float
    weights_s: float
    experts_s: float
    prefill_token_s: float
    decode_token_s: float
    context_token_s: float
    comm_step_s: float  # TP all-reduce launches + ring-step latencies per micro-batch on a stage
    comm_token_s: float  # TP all-reduce transfer per token on a stage
    handoff_s: float  # PP: per stage boundary per micro-batch
    handoff_token_s: float
    num_experts: int = 0
    experts_per_token: int = 0


def replica_costs(a: ModelArch, gpu: GpuSpec, weight_bytes: float, kv_bytes: float, asm: Assumptions,
                  weight_dtype: str = "bf16") -> ReplicaCosts:
    """Time terms of the unsharded model on one GPU of this type."""
    p = param_counts(a)
    hbm = gpu.hbm_gb_s * 1e9 * asm.hbm_efficiency
    flops = peak_flops(gpu, weight_dtype) * asm.mfu
    head = p.lm_head or p.embedding
    return ReplicaCosts(
        host_step_s=asm.host_step_s, host_seq_s=asm.host_seq_s,
        weights_s=(p.streamed - p.routed_experts) * weight_bytes / hbm,
        experts_s=p.routed_experts * weight_bytes / hbm,
        # vLLM computes logits only for each sequence's last prompt token: no head per prefill token
        prefill_token_s=2 * (p.matmul_per_token - head) / flops,
        decode_token_s=2 * p.matmul_per_token / flops,
        # the attention kernel streams the KV while it computes: a roofline of its own
        context_token_s=max(kv_bytes_per_token(a, kv_bytes) / hbm,
                            attention_flops_per_context_token(a) / flops),
        num_experts=p.num_routed_experts, experts_per_token=p.experts_per_token)


def peak_flops(gpu: GpuSpec, weight_dtype: str) -> float:
    """FP8 weights use FP8 tensor cores where the GPU has them (W8A8); int4 and FP8-without-FP8-cores
    are weight-only quantisation: the math runs in BF16."""
    if weight_dtype == "fp8" and gpu.fp8_tflops is not None:
        return gpu.fp8_tflops * 1e12
    return gpu.bf16_tflops * 1e12


def attention_flops_per_context_token(a: ModelArch) -> float:
    """One query token against one cached token: QKᵀ and AV over every head and layer."""
    per_head = a.qk_nope_head_dim + a.qk_rope_head_dim + a.v_head_dim if a.is_mla else 2 * a.head_dim
    return 2 * a.num_layers * a.num_heads * per_head


def allreduce_s(tp: int, nbytes: float, link_bytes_s: float, step_latency_s: float,
                launch_s: float = 0.0, nvls_bytes_s: float | None = None) -> float:
    """Ring all-reduce: a launch, then 2(t−1) steps, each a latency, moving 2(t−1)/t of the message
    per GPU — or, with NVLink SHARP, the whole message once at `nvls_bytes_s` where that is faster."""
    if tp <= 1:
        return 0.0
    transfer = 2 * (tp - 1) / tp * nbytes / link_bytes_s
    if nvls_bytes_s is not None:
        transfer = min(transfer, nbytes / nvls_bytes_s)
    return launch_s + 2 * (tp - 1) * step_latency_s + transfer


@dataclass(frozen=True)
class Links:
    """What TP and PP communicate over: link per direction (bytes/s) and latencies (s)."""

    tp_bytes_s: float
    tp_step_latency_s: float
    pp_bytes_s: float
    pp_latency_s: float
    tp_launch_s: float = 0.0  # one all-reduce's fixed cost besides its ring steps
    tp_nvls_bytes_s: float | None = None  # NVLink-SHARP all-reduce bandwidth, where the switch has it


def layout_links(gpu: GpuSpec, tp: int, pp: int, gpus_per_node: int, asm: Assumptions) -> Links:
    """TP stays inside a node (NVLink/PCIe); PP stages cross nodes when the replica is larger than a
    node (layouts.enumerate_layouts keeps a replica no larger than a node inside one)."""
    link = gpu.link_gb_s * 1e9 * asm.link_efficiency
    pp_link = link if tp * pp <= gpus_per_node else min(link, asm.internode_bytes_s)
    nvls = gpu.link_gb_s * 1e9 * asm.nvls_efficiency if gpu.nvls else None
    return Links(link, gpu.link_latency_us * 1e-6, pp_link, asm.handoff_latency_s, asm.allreduce_launch_s,
                 nvls)


def shard_costs(full: ReplicaCosts, *, tp: int, pp: int, num_layers: int, hidden_size: int, kv_split: int,
                links: Links, replicated_weights_s: float = 0.0) -> StepCosts:
    """Split a one-device replica over TP × PP. Device terms divide by TP (KV by `kv_split`) and
    scale to the largest stage; host terms do not shrink. Every layer all-reduces twice (after
    attention and after the MLP) a message of hidden_size per token; a PP hand-off sends the same."""
    f = stage_fraction(num_layers, pp)
    allreduces = 2 * math.ceil(num_layers / pp)
    token_bytes = hidden_size * ACT_BYTES
    return StepCosts(
        pp=pp, host_step_s=full.host_step_s, host_seq_s=full.host_seq_s,
        weights_s=(replicated_weights_s + (full.weights_s - replicated_weights_s) / tp) * f,
        experts_s=full.experts_s / tp * f,
        prefill_token_s=full.prefill_token_s / tp * f,
        decode_token_s=full.decode_token_s / tp * f,
        context_token_s=full.context_token_s / kv_split * f,
        comm_step_s=allreduces * allreduce_s(tp, 0.0, links.tp_bytes_s, links.tp_step_latency_s,
                                             links.tp_launch_s),
        comm_token_s=allreduces * allreduce_s(tp, token_bytes, links.tp_bytes_s, 0.0,
                                              nvls_bytes_s=links.tp_nvls_bytes_s),
        handoff_s=links.pp_latency_s if pp > 1 else 0.0,
        handoff_token_s=token_bytes / links.pp_bytes_s if pp > 1 else 0.0,
        num_experts=full.num_experts, experts_per_token=full.experts_per_token)


def expert_share(num_tokens: float, num_experts: int, experts_per_token: int) -> float:
    """Expected share of routed experts a batch touches (uniform top-k routing): 1 − (1 − k/E)^n."""
    if num_experts == 0 or num_tokens <= 0:
        return 0.0
    return 1.0 - (1.0 - experts_per_token / num_experts) ** num_tokens


@dataclass(frozen=True)
class StepParts:
    """One step's time split by what bounds it (device terms summed over the stages)."""

    host_s: float
    memory_s: float  # weights + KV reads, as if nothing else ran
    compute_s: float  # the linear layers' math, likewise
    comm_s: float  # all-reduce + hand-offs
    device_s: float  # what the GPUs take with loads and math overlapped (≤ memory + compute)

    @property
    def total_s(self) -> float:
        return self.host_s + self.device_s + self.comm_s


def step_parts(c: StepCosts, prefill_tokens: float, decode_seqs: float, context_tokens: float) -> StepParts:
    """One engine step over a batch. With PP the batch is split into m = min(PP, sequences)
    micro-batches; each crosses every stage, so the step (every sequence advancing one token)
    takes PP stage-times of one micro-batch plus PP − 1 hand-offs — a stage idles (PP − m)/PP of it.
    A stage's time is the linear layers' roofline, max(weights, math), plus attention's (the KV term)."""
    if prefill_tokens <= 0 and decode_seqs <= 0:
        return StepParts(0.0, 0.0, 0.0, 0.0, 0.0)
    m = min(c.pp, max(1.0, decode_seqs + (1 if prefill_tokens > 0 else 0)))
    tokens = (prefill_tokens + decode_seqs) / m
    weights = c.weights_s + c.experts_s * expert_share(tokens, c.num_experts, c.experts_per_token)
    attention = context_tokens * c.context_token_s / m
    compute = (prefill_tokens * c.prefill_token_s + decode_seqs * c.decode_token_s) / m
    comm = c.comm_step_s + tokens * c.comm_token_s
    handoffs = (c.pp - 1) * (c.handoff_s + tokens * c.handoff_token_s)
    return StepParts(c.host_step_s + decode_seqs * c.host_seq_s, c.pp * (weights + attention), c.pp * compute,
                     c.pp * comm + handoffs, c.pp * (max(weights, compute) + attention))


def step_time_s(c: StepCosts, prefill_tokens: float, decode_seqs: float, context_tokens: float) -> float:
    return step_parts(c, prefill_tokens, decode_seqs, context_tokens).total_s


# ---------------------------------------------------------------- a replica under load

@dataclass(frozen=True)
class Shape:
    """The workload as the load model needs it."""

    prompt_len: int
    output_len: int

    @property
    def mean_context(self) -> float:
        """A decoding sequence's mean cached length over its life."""
        return self.prompt_len + self.output_len / 2

    @property
    def seq_tokens(self) -> int:
        """KV a sequence holds at its end: a batch that fits at its end never preempts."""
        return self.prompt_len + self.output_len


@dataclass(frozen=True)
class Steady:
    """A replica in steady state with some slots busy."""

    step_s: float  # mean step while a request decodes
    prefill_tokens: float  # others' prompt tokens a mean step also prefills
    prefill_s: float  # a request's own prefill, first scheduled step to first token
    rate: float  # requests/s the replica completes (Little: batch / service)


def steady_state(c: StepCosts, batch: float, shape: Shape, budget: int) -> Steady:
    """`batch` requests hold slots; each holds one for its prefill, then output_len − 1 decode
    steps (service = prefill + (output − 1) × step). New requests arrive as old ones leave, at
    rate = batch / service (Little), so a mean step also prefills rate × prompt × step tokens of
    others' prompts — a fixed point, found by iterating (it contracts: prefill is a share of a step)."""
    ctx = batch * shape.mean_context
    own = prefill_s(c, shape, batch, budget)
    prefill = batch * shape.prompt_len / shape.output_len  # first guess: one prompt per output_len steps
    step = step_time_s(c, prefill, batch, ctx)
    for _ in range(12):
        rate = batch / (own + (shape.output_len - 1) * step) if batch > 0 else 0.0
        prefill = rate * shape.prompt_len * step
        step = step_time_s(c, prefill, batch, ctx)
    rate = batch / (own + (shape.output_len - 1) * step) if batch > 0 else 0.0
    return Steady(step, prefill, own, rate)


def steady_parts(c: StepCosts, batch: float, shape: Shape, budget: int) -> StepParts:
    st = steady_state(c, batch, shape, budget)
    return step_parts(c, st.prefill_tokens, batch, batch * shape.mean_context)


def prefill_s(c: StepCosts, shape: Shape, batch: float, budget: int) -> float:
    """Time from a request's first scheduled step to its first token: its prompt goes in chunks of
    what the token budget leaves beside `batch` decodes, one chunk per step. With PP a chunk is one
    micro-batch and crosses every stage (no PP speed-up for one prompt), while the decodes split
    over the other micro-batches; consecutive chunks overlap across stages ((chunks + PP − 1)/PP)."""
    chunk = max(1.0, min(shape.prompt_len, budget - batch))
    chunks = math.ceil(shape.prompt_len / chunk)
    step = step_time_s(c, chunk, batch, batch * shape.mean_context)
    if c.pp > 1:
        m = min(c.pp, max(1.0, batch + 1))
        stage = step_parts(c, 0.0, batch, batch * shape.mean_context)  # the decodes, balanced
        alone = step_parts(c, chunk, 0.0, 0.0)  # the chunk as one micro-batch crossing the stages
        step = max(step, stage.host_s + (stage.device_s + stage.comm_s) / m + alone.device_s + alone.comm_s)
    return (chunks + c.pp - 1) / c.pp * step


def service_s(c: StepCosts, batch: float, shape: Shape, budget: int) -> float:
    """How long a request holds a batch slot: its prefill, then output_len − 1 more steps."""
    st = steady_state(c, batch, shape, budget)
    return st.prefill_s + (shape.output_len - 1) * st.step_s


def open_loop_batch(c: StepCosts, rate: float, slots: int, shape: Shape, budget: int) -> float | None:
    """Mean running batch at `rate` requests/s (Little's law: batch = rate × service time(batch)),
    or None when even a full batch cannot keep up (the queue grows without bound)."""
    if rate <= 0:
        return 0.0
    if rate * service_s(c, slots, shape, budget) >= slots:
        return None
    lo, hi = 0.0, float(slots)
    for _ in range(60):
        mid = (lo + hi) / 2
        if rate * service_s(c, mid, shape, budget) > mid:
            lo = mid
        else:
            hi = mid
    return hi


def erlang_c(servers: int, offered: float) -> float:
    """P(an arrival waits) in M/M/c with `offered` Erlangs (Erlang B recursion, then C).

    The recursion starts 12σ below the offered load (σ = √a) from B = 1: the error of that start
    shrinks by ∏ k/a ≈ e^−72 before it matters; 12σ + 50 servers above it nobody waits. So a
    replica with 10⁵ slots costs ~10⁴ steps, not 10⁵."""
    if offered <= 0:
        return 0.0
    if offered >= servers:
        return 1.0
    spread = 12 * math.sqrt(offered)
    if servers > offered + spread + 50:
        return 0.0
    b = 1.0
    for k in range(max(1, int(offered - spread)), servers + 1):
        b = offered * b / (k + offered * b)
    return b / (1 - offered / servers * (1 - b))


def queue_wait_quantile_s(q: float, servers: int, offered: float, service_s_: float) -> float:
    """q-quantile of the wait for a slot: M/M/c's P(W > t) = C·e^(−(c−a)t/S), halved for
    deterministic service (Allen-Cunneen: (1 + cv²)/2 with cv = 0 — our requests are all alike)."""
    waiting = erlang_c(servers, offered)
    if waiting <= 1 - q or offered >= servers:
        return 0.0 if offered < servers else math.inf
    return 0.5 * math.log(waiting / (1 - q)) * service_s_ / (servers - offered)


def arrivals_quantile(q: float, mean: float) -> float:
    """Normal approximation to a Poisson count's q-quantile (q = 0.5 or 0.99 here)."""
    z = {0.5: 0.0, 0.9: 1.2816, 0.95: 1.6449, 0.99: 2.3263}.get(q, 2.3263)
    return mean + z * math.sqrt(max(mean, 0.0))


def tpot_quantile_s(c: StepCosts, q: float, batch: float, shape: Shape, st: Steady) -> float:
    """A request's TPOT averages its decode steps; besides the batch's decodes they prefill the
    prompts that arrive meanwhile — a Poisson count with mean rate × (output − 1) × step — so its
    q-quantile puts that count's q-quantile of prompts into those steps."""
    decode_steps = max(1, shape.output_len - 1)
    arrivals = arrivals_quantile(q, st.rate * decode_steps * st.step_s)
    return step_time_s(c, arrivals * shape.prompt_len / decode_steps, batch, batch * shape.mean_context)


@dataclass(frozen=True)
class LoadPoint:
    """One replica at an offered load (per-replica share of the fleet's)."""

    batch: float  # mean running sequences
    output_tok_s: float  # this replica's output tokens/s
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p99_s: float
    overloaded: bool = False  # arrivals outpace a full batch: the queue (and TTFT) grows without bound


def closed_loop_point(c: StepCosts, concurrency: float, slots: int, shape: Shape, budget: int) -> LoadPoint:
    """`concurrency` requests always in flight at this replica. Up to `slots` run; the rest queue,
    and one slot frees every service/slots seconds, so a queued request waits
    (concurrency − slots) × service / slots (the same for all: p50 = p99 but for step alignment)."""
    batch = min(concurrency, float(slots))
    st = steady_state(c, batch, shape, budget)
    wait = max(0.0, concurrency - slots) / st.rate if st.rate else 0.0
    return _point(c, batch, shape, st, (wait, wait), st.rate * shape.output_len)


def open_loop_point(c: StepCosts, rate: float, slots: int, shape: Shape, budget: int) -> LoadPoint:
    """Poisson arrivals at `rate`/s: the batch from Little's law, the wait for a slot from M/D/c."""
    batch = open_loop_batch(c, rate, slots, shape, budget)
    if batch is None:
        full = steady_state(c, slots, shape, budget)
        tpots = (tpot_quantile_s(c, 0.5, slots, shape, full), tpot_quantile_s(c, 0.99, slots, shape, full))
        return LoadPoint(float(slots), full.rate * shape.output_len, math.inf, math.inf, *tpots, True)
    st = steady_state(c, batch, shape, budget)
    service = batch / st.rate if st.rate else st.prefill_s
    waits = (queue_wait_quantile_s(0.5, slots, batch, service),
             queue_wait_quantile_s(0.99, slots, batch, service))
    return _point(c, batch, shape, st, waits, rate * shape.output_len)


def _point(c: StepCosts, batch: float, shape: Shape, st: Steady, waits: tuple[float, float],
           tok_s: float) -> LoadPoint:
    """TTFT = wait for a slot + wait for the running step to end (uniform over one step) + prefill."""
    return LoadPoint(batch, tok_s, waits[0] + 0.5 * st.step_s + st.prefill_s,
                     waits[1] + 0.99 * st.step_s + st.prefill_s,
                     tpot_quantile_s(c, 0.5, batch, shape, st), tpot_quantile_s(c, 0.99, batch, shape, st))


def saturation_rate(c: StepCosts, slots: int, shape: Shape, budget: int) -> float:
    """Requests/s one replica completes with every slot busy."""
    return slots / service_s(c, slots, shape, budget)


def meets_slo(p: LoadPoint, ttft_slo_s: float | None, tpot_slo_s: float | None) -> bool:
    """SLOs are judged at p99."""
    return ((ttft_slo_s is None or p.ttft_p99_s <= ttft_slo_s)
            and (tpot_slo_s is None or p.tpot_p99_s <= tpot_slo_s) and not p.overloaded)


def capacity_rate(c: StepCosts, slots: int, shape: Shape, budget: int, ttft_slo_s: float | None,
                  tpot_slo_s: float | None) -> float:
    """The highest Poisson rate (requests/s, one replica) whose p99 TTFT and TPOT meet the SLOs;
    without SLOs, 99% of the saturation rate. 0 when even a lone request misses them."""
    top = saturation_rate(c, slots, shape, budget)
    if ttft_slo_s is None and tpot_slo_s is None:
        return 0.99 * top
    if not meets_slo(open_loop_point(c, top * 1e-6, slots, shape, budget), ttft_slo_s, tpot_slo_s):
        return 0.0
    lo, hi = top * 1e-6, top
    for _ in range(40):
        mid = (lo + hi) / 2
        if meets_slo(open_loop_point(c, mid, slots, shape, budget), ttft_slo_s, tpot_slo_s):
            lo = mid
        else:
            hi = mid
    return lo
