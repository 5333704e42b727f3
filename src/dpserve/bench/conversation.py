"""The unit of benchmark work: a conversation of one or more turns, and what one request measured."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Turn:
    """One user message and the reply length asked for."""

    user_text: str
    output_len: int


@dataclass(frozen=True)
class Conversation:
    """Turns sent in order; each request carries the whole history so far (system, user, assistant...).

    Single-turn workloads produce one-turn conversations. `session_id` goes out as `x-session-id`.
    """

    turns: tuple[Turn, ...]
    system_text: str | None = None
    session_id: str | None = None


@dataclass
class RequestResult:
    """Client-side measurements of one request; times in seconds, relative to the run start."""

    ok: bool = False
    start_s: float = 0.0
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int | None = None
    generated_text: str = ""
    worker: str | None = None
    error: str | None = None

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first (vLLM's TPOT); None with fewer than 2 tokens."""
        if self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)
