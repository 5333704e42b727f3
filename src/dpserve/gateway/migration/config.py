"""MigrationConfig: the gateway's mid-stream migration flags."""

from __future__ import annotations

from dataclasses import dataclass

from dpserve.config import option, require


@dataclass(frozen=True)
class MigrationConfig:
    """Continue a response cut after its first byte on another replica (token-exact when the
    replicas return token ids, vLLM's `return_token_ids`; text-level otherwise)."""

    stream_migration: bool = option(
        True, "on by default: continue a response cut after its first byte (replica reset/EOF, error "
              "event, stall, drain timeout, marked down) on another replica, token-exact when the "
              "replicas return token ids (vLLM's return_token_ids), text-level otherwise; "
              "non-streaming requests are streamed from the replica internally and resume the same "
              "way (see --resume-min-tokens). Never for n>1, response_format/guided decoding, tools, "
              "logprobs or echo (those "
              "end with an SSE error event, as with this off), nor for a client that disconnected; "
              "a seeded request continues with the same seed, which is a different random draw")
    max_migrations: int = option(3, "migrations of one request at most; then the error event")
    resume_min_tokens: int = option(
        64, "a non-streaming request is streamed from its replica internally (so a failure resumes "
            "it) only when it may generate more than this many tokens (max_tokens / "
            "max_completion_tokens absent or larger); shorter ones are relayed whole and retried "
            "whole on a failure: resuming would save at most this much work, and streaming a "
            "whole answer costs the gateway about twice the CPU of relaying its body "
            "(docs/benchmarks.md); 0: resume every non-streaming request")
    stream_stall_timeout_s: float = option(
        10.0, "a stream with no chunk from its replica for this long is moved to another replica "
              "(the stalled replica is not counted as failed: health checks decide that)")

    def __post_init__(self) -> None:
        require(self.max_migrations >= 0, "--max-migrations must be >= 0")
        require(self.resume_min_tokens >= 0, "--resume-min-tokens must be >= 0")
        require(self.stream_stall_timeout_s > 0, "--stream-stall-timeout-s must be > 0")
