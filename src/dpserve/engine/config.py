"""`dpserve engine` configuration: model, device, KV cache and scheduler limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dpserve.config import DEFAULT_HOST, DEFAULT_MODEL, DEFAULT_REPLICA_PORT, nested, option, require
from dpserve.kv_events.config import FLAG_HELP as KV_EVENTS_HELP
from dpserve.kv_events.config import KVEventsConfig, parse_kv_events_config
from dpserve.serving.limits import RequestLimits


@dataclass(frozen=True)
class EngineConfig:
    """One built-in replica: what it serves, where, and how much it may batch and cache."""

    model: str = option(DEFAULT_MODEL, "bundled model name or HF-format model directory")
    served_model_name: str | None = option(None, "model name clients use (default: the --model value)")
    host: str = option(DEFAULT_HOST, "address to listen on")
    port: int = option(DEFAULT_REPLICA_PORT, "port to listen on (0 = any free port)")
    device: Literal["cpu", "cuda"] = option("cpu", "torch device to run on")
    dtype: Literal["float32", "bfloat16"] = option("float32", "weight and KV cache dtype")
    block_size: int = option(16, "tokens per KV cache block")
    kv_cache_tokens: int = option(16384, "KV cache capacity in tokens (rounded down to whole blocks)")
    enable_prefix_caching: bool = option(True, "reuse KV blocks of identical prompt prefixes")
    max_num_seqs: int = option(64, "most requests running at once")
    max_num_batched_tokens: int = option(2048, "token budget of one engine step (chunked prefill)")
    max_model_len: int | None = option(
        None, "prompt + completion token limit (default: the model's, capped at the KV capacity)")
    num_threads: int | None = option(
        None, "torch CPU threads for the model (default: every CPU this process may use)")
    kv_events_config: str | None = option(None, KV_EVENTS_HELP, metavar="JSON")
    generation_config: str = option(
        "auto", "default temperature/top_p/top_k of requests that leave them out (and a cap on "
        "max_tokens if it sets max_new_tokens), as vLLM's flag: 'auto' = the model's "
        "generation_config.json (the bundled model's: temperature 0.2, top_p 0.9), 'vllm' = the "
        "API's neutral defaults, or a directory holding one")
    limits: RequestLimits = nested(RequestLimits)

    def __post_init__(self) -> None:
        require(self.block_size >= 1, f"--block-size must be >= 1, got {self.block_size}")
        require(self.kv_cache_tokens >= self.block_size,
                f"--kv-cache-tokens ({self.kv_cache_tokens}) must hold one block ({self.block_size})")
        require(self.max_num_seqs >= 1, f"--max-num-seqs must be >= 1, got {self.max_num_seqs}")
        require(self.max_num_batched_tokens >= 1,
                f"--max-num-batched-tokens must be >= 1, got {self.max_num_batched_tokens}")
        require(self.max_model_len is None or self.max_model_len >= 2,
                f"--max-model-len must be >= 2, got {self.max_model_len}")
        require(self.num_threads is None or self.num_threads >= 1,
                f"--num-threads must be >= 1, got {self.num_threads}")
        require(0 <= self.port <= 65535, f"--port must be 0..65535, got {self.port}")
        parse_kv_events_config(self.kv_events_config)

    @property
    def kv_events(self) -> KVEventsConfig | None:
        return parse_kv_events_config(self.kv_events_config)

    @property
    def num_blocks(self) -> int:
        return self.kv_cache_tokens // self.block_size

    def resolved_max_model_len(self, model_max_len: int) -> int:
        """The limit actually enforced: never more than the model's window or the KV capacity."""
        capacity = self.num_blocks * self.block_size
        limit = min(model_max_len, capacity)
        return limit if self.max_model_len is None else min(self.max_model_len, limit)
