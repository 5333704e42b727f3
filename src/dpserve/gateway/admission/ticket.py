"""Ticket: one admitted request, released exactly once when its response ends."""

from __future__ import annotations

from collections.abc import Callable

from dpserve.gateway.admission.tenants import Tenant


class Ticket:
    """Proof of admission. The gateway calls `release(prompt_tokens, completion_tokens)` once,
    in a `finally` around the proxied response (errors and client disconnects included); later
    calls are ignored. Pass None for a count that is unknown: the prompt is then estimated from
    its length, and the completion charged as reserved (`reserved_completion`, the request's
    max_tokens or the configured default) — unknown never means free.

    `reserved_tokens` is what admission already took from tokens_per_minute (prompt estimate +
    completion reserve; 0 when the tenant has no token limit); release settles the difference.
    """

    __slots__ = ("_on_release", "_released", "estimated_prompt_tokens", "lease_id", "local_lease",
                 "queue_wait_s", "reserved_completion", "reserved_tokens", "tenant")

    def __init__(self, tenant: Tenant, *, queue_wait_s: float = 0.0, lease_id: str | None = None,
                 estimated_prompt_tokens: int = 0, reserved_completion: int = 0, reserved_tokens: int = 0,
                 local_lease: bool = False,
                 on_release: Callable[[Ticket, int, int | None], None] | None = None) -> None:
        self.tenant = tenant
        self.queue_wait_s = queue_wait_s
        self.lease_id = lease_id
        self.local_lease = local_lease  # taken from the local share while the shared store was down
        self.estimated_prompt_tokens = estimated_prompt_tokens
        self.reserved_completion = reserved_completion
        self.reserved_tokens = reserved_tokens
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
            completion = None if completion_tokens is None else max(0, completion_tokens)
            self._on_release(self, max(0, prompt), completion)

    def charge(self, prompt_tokens: int, completion_tokens: int | None) -> int:
        """Tokens this request costs its tenant: the real counts, the reserve for an unknown completion."""
        return prompt_tokens + (self.reserved_completion if completion_tokens is None else completion_tokens)
