"""The seam between the gateway and admission control: what each side gives the other.

The gateway implements `CapacityView`; admission hands back a `Ticket` per admitted request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class WorkerLoad:
    """One worker as the gateway sees it right now.

    in_flight: requests the gateway has sent to it and not finished (its own counter).
    running / waiting: the replica's last reported `vllm:num_requests_running` / `..._waiting`
    (0 when unknown); in_flight_at_poll: our in_flight when they were read.
    slots: requests it runs at once as far as the gateway knows (seen running, its cap, >= 1).
    """

    worker_id: str
    healthy: bool
    in_flight: int = 0
    running: int = 0
    waiting: int = 0
    weight: float = 1.0
    in_flight_at_poll: int = 0
    slots: int = 1


class CapacityView(Protocol):
    """The gateway's live view of its workers, read by admission (never mutated by it)."""

    def has_capacity(self) -> bool:
        """True when some healthy worker is below its in-flight cap
        (`AdmissionConfig.worker_cap(weight)`; always true for a healthy worker when uncapped).
        Called on every admission and queue wake-up, so it must be cheap and must not block."""
        ...

    def load_snapshot(self) -> Sequence[WorkerLoad]:
        """Every registered worker's current load (healthy or not); used by the SLO estimator."""
        ...


@dataclass(frozen=True)
class AdmissionContext:
    """What admission needs to know about a request body (the gateway has parsed it).

    prompt_chars: length of the prompt text (all messages' content for chat), used to estimate
    prompt tokens (~4 chars per token) when no token count is known.
    max_tokens: the request's max_tokens / max_completion_tokens, None when absent.
    """

    prompt_chars: int = 0
    max_tokens: int | None = None

    @property
    def estimated_prompt_tokens(self) -> int:
        return max(1, self.prompt_chars // 4)

    def completion_reserve(self, default: int) -> int:
        """Completion tokens to reserve: max_tokens when given (bounded below by 0), else `default`."""
        return default if self.max_tokens is None else max(0, self.max_tokens)
