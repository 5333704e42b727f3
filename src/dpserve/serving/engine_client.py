"""The contract between the replica HTTP server and whatever generates tokens.

The built-in engine (`dpserve.engine`) and the simulator (`dpserve.sim`) each implement
EngineClient; `dpserve.serving` builds the OpenAI surface, SSE, stop strings and vLLM metrics on
top, so both replicas look the same to the gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling; validated by the server before it reaches an engine.

    temperature == 0 means greedy. top_k None or -1 means off. Stop *strings* are handled by the
    server (it aborts the request once one appears); stop token ids, EOS and max_tokens by the engine.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False


@dataclass(frozen=True)
class GenerateRequest:
    request_id: str
    prompt_token_ids: Sequence[int]
    sampling: SamplingParams


@dataclass(frozen=True)
class EngineError:
    """Why an engine ended a request on its own (its last delta says finish_reason "abort").

    `engine_down` False: this request failed (its sampling, say) and the engine serves on; the client
    gets a 4xx, so a gateway neither retries it elsewhere nor blames the replica. True: the engine
    itself failed; the client gets a 503, which a gateway retries on another replica.
    """

    message: str
    engine_down: bool = False


class PromptTooLongError(ValueError):
    """A tokenizer refused text too long for the context without tokenizing all of it."""

    def __init__(self, num_chars: int, min_tokens: int) -> None:
        super().__init__(f"a prompt of {num_chars} characters has at least {min_tokens} tokens")
        self.num_chars = num_chars
        self.min_tokens = min_tokens


@dataclass
class TokenDelta:
    """What one engine step produced for one request (one or more new tokens)."""

    new_token_ids: list[int]
    finish_reason: FinishReason | None = None  # set on the last delta
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    error: EngineError | None = None  # set (with finish_reason "abort") when the engine failed it


@dataclass
class EngineStats:
    """Instantaneous engine state for /metrics (vLLM semantics)."""

    num_running: int = 0
    num_waiting: int = 0
    kv_cache_usage: float = 0.0  # fraction of KV blocks in use, 0..1
    prefix_cache_queries: int = 0  # cumulative prompt tokens looked up in the prefix cache
    prefix_cache_hits: int = 0  # cumulative prompt tokens found there
    num_preemptions: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    max_num_seqs: int | None = None  # the scheduler's running-batch cap, when the engine has one


class Tokenizer(Protocol):
    """Text ↔ token ids, and the chat template.

    Optional attribute: `vocab_size` (token-id prompts beyond it are refused with a 400). Both
    `encode` and `apply_chat_template` run on a worker thread, never on the event loop.
    """

    eos_token_ids: tuple[int, ...]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without adding special tokens the template already adds.

        May raise PromptTooLongError (→ 400) for text that cannot fit the context whatever it says.
        """
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of `token_ids`, special tokens skipped."""
        ...

    def apply_chat_template(self, messages: list[dict[str, Any]], *,
                            continue_final_message: bool = False) -> list[int]:
        """Prompt token ids for an OpenAI `messages` list, with the assistant turn opened — or,
        with `continue_final_message`, the last message left open so generation continues it.

        Raises ValueError (→ 400) for messages the template cannot render.
        """
        ...


class EngineClient(Protocol):
    """An async token generator with its tokenizer. One instance per replica process."""

    tokenizer: Tokenizer
    max_model_len: int  # prompt + completion tokens a request may use

    async def start(self) -> None:
        """Load/warm up; return when ready to generate (the server answers /health after)."""
        ...

    async def stop(self) -> None:
        """Abort everything and release resources."""
        ...

    def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        """Stream deltas until one carries a finish_reason.

        Closing the iterator early (aclose, or the consuming task being cancelled) aborts the
        request and frees its KV blocks at once.
        """
        ...

    def stats(self) -> EngineStats:
        """Current scheduler/cache state; cheap, callable from the event loop."""
        ...
