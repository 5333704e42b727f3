"""Ticket: one admitted request, released exactly once when its response ends."""

from __future__ import annotations

from collections.abc import Callable

from dpserve.gateway.admission.tenants import Tenant


class Ticket:
    """Proof of admission. The gateway calls `release(prompt_tokens, completion_tokens)` once,
    in a `finally` around the proxied response (errors and client disconnects included); later
    calls are ignored. Token counts feed tokens_per_minute and the per-tenant token metrics;
    pass None when unknown (the prompt is then estimated from its length, completion as 0).
    """

    __slots__ = ("_on_release", "_released", "estimated_prompt_tokens", "lease_id", "queue_wait_s",
                 "tenant")

    def __init__(self, tenant: Tenant, *, queue_wait_s: float = 0.0, lease_id: str | None = None,
                 estimated_prompt_tokens: int = 0,
                 on_release: Callable[[Ticket, int, int], None] | None = None) -> None:
        self.tenant = tenant
        self.queue_wait_s = queue_wait_s
        self.lease_id = lease_id
        self.estimated_prompt_tokens = estimated_prompt_tokens
        self._on_release = on_release
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def release(self, prompt_tokens: int | None = None, completion_tokens: int | None = None) -> None:
        if self._released:
            return
        self._released = True
        if self._on_release is not None:
            prompt = self.estimated_prompt_tokens if prompt_tokens is None else prompt_tokens
            self._on_release(self, max(0, prompt), max(0, completion_tokens or 0))
