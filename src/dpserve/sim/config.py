"""`dpserve sim` configuration: server, batching limits, time model, prefix cache, failure knobs."""

from __future__ import annotations

from dataclasses import dataclass

from dpserve.config import DEFAULT_HOST, DEFAULT_MODEL, DEFAULT_REPLICA_PORT, nested, option, require
from dpserve.kv_events.config import FLAG_HELP as KV_EVENTS_HELP
from dpserve.kv_events.config import KVEventsConfig, parse_kv_events_config
from dpserve.serving.limits import RequestLimits


@dataclass(frozen=True)
class TimeModelConfig:
    """Step time = host + max(weights, prefill tokens × per-token + decode seqs × math per seq)
    + context × per-token: the host and device parts of the costs below, the weight read and the
    math overlapped (a roofline). Defaults model Llama-3-8B in bf16 on one H100 SXM (see
    dpserve.sim.time_model for the maths).
    """

    step_base_ms: float = option(7.0, "fixed cost of one engine step (weights read + launch), ms")
    prefill_token_us: float = option(30.0, "compute cost per prefill token, µs")
    decode_seq_us: float = option(60.0, "cost per decoding sequence in a step, µs")
    context_token_ns: float = option(44.0, "KV read cost per context token of each sequence in a step, ns")
    time_scale: float = option(1.0, "run this many times faster than real time (e.g. 10)")
    # A TP×PP replica: the costs above are the whole model on one GPU; these shard them
    # (dpserve.planner.formulas.shard_costs, the formula `dpserve plan` predicts with).
    tp_size: int = option(1, "tensor-parallel GPUs per replica: weight, math and KV-read costs shrink "
                             "TP-fold; two all-reduces per layer are added")
    pp_size: int = option(1, "pipeline stages per replica: layers split over PP GPUs; a step takes PP "
                             "stage-times of one micro-batch (up to PP micro-batches in flight)")
    host_step_ms: float = option(1.5, "the part of --step-base-ms that is host work (scheduling, "
                                      "launches): TP/PP do not shrink it (capped at --step-base-ms)")
    host_seq_us: float = option(30.0, "the part of --decode-seq-us that is host work per sequence: "
                                      "TP/PP do not shrink it (capped at --decode-seq-us)")
    num_layers: int = option(32, "layers of the simulated model (all-reduces per step, PP stage split)")
    hidden_size: int = option(4096, "hidden size of the simulated model (bytes a token all-reduces)")
    num_kv_heads: int = option(8, "KV heads: TP beyond this replicates KV instead of splitting it "
                                  "(1 for MLA's single latent)")
    link_gb_s: float = option(360.0, "achieved GPU-to-GPU bandwidth of TP all-reduces, GB/s per direction")
    link_latency_us: float = option(0.5, "latency of one ring all-reduce step, µs")
    allreduce_launch_us: float = option(5.0, "fixed cost of one all-reduce besides its ring steps "
                                             "(launch and cross-GPU handshake), µs")
    nvls_gb_s: float | None = option(None, "NVLink-SHARP all-reduce bandwidth, GB/s: an all-reduce moves "
                                           "each byte once at this rate where that beats the ring "
                                           "(default: ring only)")
    pp_link_gb_s: float | None = option(None, "bandwidth between PP stages, GB/s (default: --link-gb-s)")
    handoff_us: float = option(10.0, "latency of one PP stage hand-off, µs")

    def __post_init__(self) -> None:
        require(min(self.step_base_ms, self.prefill_token_us, self.decode_seq_us,
                    self.context_token_ns) >= 0, "time model costs must be >= 0")
        require(self.time_scale > 0, f"--time-scale must be > 0, got {self.time_scale}")
        for name in ("tp_size", "pp_size", "num_layers", "hidden_size", "num_kv_heads"):
            require(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1")
        require(self.pp_size <= self.num_layers, f"--pp-size ({self.pp_size}) exceeds --num-layers "
                f"({self.num_layers})")
        require(min(self.host_step_ms, self.host_seq_us, self.link_latency_us, self.allreduce_launch_us,
                    self.handoff_us) >= 0,
                "host shares and latencies must be >= 0")
        require(self.link_gb_s > 0 and (self.pp_link_gb_s is None or self.pp_link_gb_s > 0)
                and (self.nvls_gb_s is None or self.nvls_gb_s > 0), "link bandwidths must be > 0")


@dataclass(frozen=True)
class FaultConfig:
    """Failure knobs for tests; counts are of POSTed completion requests."""

    fail_first: int = option(0, "answer 503 to the first N completion requests")
    fail_after: int | None = option(None, "answer 500 to every completion request after the first N")
    refuse_after: int | None = option(
        None, "shut down, exit status 3 (connections refused), once N completion requests were answered")
    hang_after: int | None = option(None, "accept but never answer completion requests after the first N")
    die_mid_stream_after: int | None = option(
        None, "requests after the first N kill the process (SIGKILL) once 2 chunks were streamed")
    slow_first_byte_s: float = option(0.0, "delay before answering each completion request, seconds")

    def __post_init__(self) -> None:
        require(self.fail_first >= 0, "--fail-first must be >= 0")
        for name in ("fail_after", "refuse_after", "hang_after", "die_mid_stream_after"):
            value = getattr(self, name)
            require(value is None or value >= 0, f"--{name.replace('_', '-')} must be >= 0")
        require(self.slow_first_byte_s >= 0, "--slow-first-byte-s must be >= 0")


@dataclass(frozen=True)
class SimEngineConfig:
    """The simulated engine: batching limits, KV/prefix cache and sampling of filler tokens."""

    max_model_len: int = option(8192, "prompt + completion tokens per request")
    max_num_seqs: int = option(256, "most sequences in the running batch")
    max_num_batched_tokens: int = option(8192, "token budget per step (decode + prefill chunk)")
    kv_cache_tokens: int = option(400_000, "KV-cache capacity in tokens")
    block_size: int = option(16, "tokens per KV block (prefix-cache granularity)")
    enable_prefix_caching: bool = option(True, "reuse cached KV blocks across requests")
    natural_output_len: int = option(
        256, "mean natural answer length: each request ends with EOS after a length drawn uniformly "
        "from [N/2, 3N/2] unless max_tokens comes first or ignore_eos is set; 0 = never EOS")
    seed: int = option(0, "seed for requests that give no seed and sample (temperature > 0)")
    time: TimeModelConfig = nested(TimeModelConfig)
    gpu_memory_gib: float | None = option(
        None, "memory of each GPU: when set, the KV capacity is what a TP×PP replica keeps after the "
              "weights (0.9 of it usable, 1 GiB runtime reserve) instead of --kv-cache-tokens")
    weights_gib: float = option(14.96, "model weights, GiB (Llama-3-8B bf16), for --gpu-memory-gib")
    kv_bytes_per_token: int = option(131072, "KV bytes per token of the whole model (Llama-3-8B bf16), "
                                             "for --gpu-memory-gib")
    kv_events_config: str | None = option(None, KV_EVENTS_HELP, metavar="JSON")

    def __post_init__(self) -> None:
        require(self.max_model_len >= 2, "--max-model-len must be >= 2")
        require(self.max_num_seqs >= 1, "--max-num-seqs must be >= 1")
        require(self.block_size >= 1, "--block-size must be >= 1")
        require(self.max_num_batched_tokens >= 1, "--max-num-batched-tokens must be >= 1")
        require(self.gpu_memory_gib is None or self.gpu_memory_gib > 0, "--gpu-memory-gib must be > 0")
        require(self.weights_gib >= 0 and self.kv_bytes_per_token >= 1,
                "--weights-gib must be >= 0 and --kv-bytes-per-token >= 1")
        source = "--kv-cache-tokens" if self.gpu_memory_gib is None else "the KV room --gpu-memory-gib leaves"
        require(self.resolved_kv_cache_tokens >= self.max_model_len,
                f"{source} ({self.resolved_kv_cache_tokens} tokens) must hold one request of "
                f"--max-model-len ({self.max_model_len}) tokens")
        require(self.natural_output_len >= 0, "--natural-output-len must be >= 0")
        parse_kv_events_config(self.kv_events_config)

    @property
    def resolved_kv_cache_tokens(self) -> int:
        """--kv-cache-tokens, or the capacity --gpu-memory-gib leaves a TP×PP replica."""
        if self.gpu_memory_gib is None:
            return self.kv_cache_tokens
        from dpserve.planner.formulas import GIB, kv_cache_tokens

        t = self.time
        return kv_cache_tokens(self.gpu_memory_gib * GIB, self.weights_gib * GIB, self.kv_bytes_per_token,
                               t.tp_size, t.pp_size, min(t.tp_size, t.num_kv_heads))

    @property
    def num_blocks(self) -> int:
        return self.resolved_kv_cache_tokens // self.block_size

    @property
    def kv_events(self) -> KVEventsConfig | None:
        return parse_kv_events_config(self.kv_events_config)


@dataclass(frozen=True)
class SimConfig:
    """`dpserve sim`: one simulated replica with the engine's HTTP surface."""

    host: str = option(DEFAULT_HOST, "address to listen on")
    port: int = option(DEFAULT_REPLICA_PORT, "port to listen on (0 = any free port)")
    model: str = option(DEFAULT_MODEL, "model name (only used as the default served name)")
    served_model_name: str | None = option(None, "name the replica serves (default: --model)")
    engine: SimEngineConfig = nested(SimEngineConfig)
    faults: FaultConfig = nested(FaultConfig)
    limits: RequestLimits = nested(RequestLimits)

    def __post_init__(self) -> None:
        require(0 <= self.port < 65536, f"--port must be in 0..65535, got {self.port}")

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model
