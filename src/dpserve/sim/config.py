"""`dpserve sim` configuration: server, batching limits, time model, prefix cache, failure knobs."""

from __future__ import annotations

from dataclasses import dataclass

from dpserve.config import DEFAULT_HOST, DEFAULT_MODEL, DEFAULT_REPLICA_PORT, nested, option, require
from dpserve.serving.limits import RequestLimits


@dataclass(frozen=True)
class TimeModelConfig:
    """Step time = base + prefill tokens × per-token + decode seqs × per-seq + context × per-token.

    Defaults model Llama-3-8B in bf16 on one H100 SXM (see dpserve.sim.time_model for the maths).
    """

    step_base_ms: float = option(7.0, "fixed cost of one engine step (weights read + launch), ms")
    prefill_token_us: float = option(30.0, "compute cost per prefill token, µs")
    decode_seq_us: float = option(60.0, "cost per decoding sequence in a step, µs")
    context_token_ns: float = option(44.0, "KV read cost per context token of each sequence in a step, ns")
    time_scale: float = option(1.0, "run this many times faster than real time (e.g. 10)")

    def __post_init__(self) -> None:
        require(min(self.step_base_ms, self.prefill_token_us, self.decode_seq_us,
                    self.context_token_ns) >= 0, "time model costs must be >= 0")
        require(self.time_scale > 0, f"--time-scale must be > 0, got {self.time_scale}")


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

    def __post_init__(self) -> None:
        require(self.max_model_len >= 2, "--max-model-len must be >= 2")
        require(self.max_num_seqs >= 1, "--max-num-seqs must be >= 1")
        require(self.block_size >= 1, "--block-size must be >= 1")
        require(self.max_num_batched_tokens >= 1, "--max-num-batched-tokens must be >= 1")
        require(self.kv_cache_tokens >= self.max_model_len,
                f"--kv-cache-tokens ({self.kv_cache_tokens}) must hold one request of "
                f"--max-model-len ({self.max_model_len}) tokens")
        require(self.natural_output_len >= 0, "--natural-output-len must be >= 0")

    @property
    def num_blocks(self) -> int:
        return self.kv_cache_tokens // self.block_size


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
