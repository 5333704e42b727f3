"""Admission: the gateway's one entry point — tenant, SLO check, quota, then the capacity queue."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from dpserve.aio import BackgroundTasks, cancel_and_wait, finish_all
from dpserve.gateway.admission.config import AdmissionConfig
from dpserve.gateway.admission.contract import AdmissionContext, CapacityView
from dpserve.gateway.admission.gate import CapacityGate
from dpserve.gateway.admission.metrics import AdmissionMetrics, Gauges
from dpserve.gateway.admission.priority import request_priority
from dpserve.gateway.admission.quota import QuotaStore, QuotaUnavailable, build_quota_store
from dpserve.gateway.admission.quota.local_share import LocalShare
from dpserve.gateway.admission.rate_window import EventRate, retry_after_s
from dpserve.gateway.admission.rejection import Rejection, too_many
from dpserve.gateway.admission.slo import WaitEstimate, estimate_wait, misses_slo
from dpserve.gateway.admission.tenants import DEFAULT_TENANT, KeyRing, Tenant, load_key_file
from dpserve.gateway.admission.ticket import Ticket

# Completions are averaged over this window for Retry-After and the SLO estimate.
DRAIN_WINDOW_S = 10.0
# Safety net: wake the queue this often even if no capacity event arrived.
PUMP_INTERVAL_S = 0.25
# In SLO mode a request may spend this share of the TTFT SLO waiting for admission; the rest is
# left for proxying, the replica's own scheduling and the prefill of its prompt.
SLO_QUEUE_SHARE = 0.8
_ANONYMOUS = Tenant(DEFAULT_TENANT)


@dataclass(frozen=True, slots=True)
class _Lease:
    """A quota lease: its id, and whether the local share (shared store down) granted it."""

    lease_id: str
    local: bool


class Admission:
    """Decides, per request, whether it may go to a worker now, later, or not at all.

    Checks run cheapest and least committal first: identify the tenant (401), priority header
    (400), SLO estimate (429 `slo_shed`), tenant quota (429 naming the limit, or 503 when the
    backend is down and fail-closed), then the capacity queue (429 `queue_full` /
    `queue_timeout`). A request that passed its quota but is shed by the queue gives its
    concurrency slot back; it still counts as one of the tenant's requests that minute.
    See the package docstring for how the gateway drives it.
    """

    def __init__(self, config: AdmissionConfig, capacity: CapacityView, *, keyring: KeyRing | None,
                 store: QuotaStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._capacity = capacity
        self._keyring = keyring
        self._store = store
        self._local = LocalShare(clock, store.gateways_seen, config.quota_local_share)
        self._clock = clock
        self.metrics = AdmissionMetrics()
        self._drain = EventRate(DRAIN_WINDOW_S, clock)
        self._gate = (CapacityGate(capacity, queue_size=config.queue_size, drain=self._drain, clock=clock)
                      if config.max_inflight_per_worker is not None else None)
        self._last_estimate: WaitEstimate | None = None
        self._background = BackgroundTasks()
        self._pumper: asyncio.Task[None] | None = None

    def worker_cap(self, weight: float = 1.0) -> int | None:
        """In-flight cap for a worker of this weight; None when uncapped."""
        return self.config.worker_cap(weight)

    def worker_has_room(self, in_flight: int, weight: float = 1.0) -> bool:
        """Whether a healthy worker with this load may take one more request now (for the
        gateway's `has_capacity()` and for filtering its routing candidates)."""
        cap = self.config.worker_cap(weight)
        return cap is None or in_flight < cap

    async def start(self) -> None:
        await self._store.start()
        if self._gate is not None:
            self._pumper = asyncio.create_task(self._pump_forever(), name="admission-pump")

    async def stop(self) -> None:
        # the releases must reach the store before it closes
        await finish_all([lambda: cancel_and_wait(self._pumper), self._background.wait_all, self._store.stop])

    def on_capacity_freed(self) -> None:
        """Capacity may have grown (in-flight fell, worker added/healthy): wake the queue."""
        if self._gate is not None:
            self._gate.pump()

    @property
    def tenants(self) -> tuple[Tenant, ...]:
        """The tenants of --api-keys with their limits (none without the file)."""
        return self._keyring.tenants if self._keyring is not None else ()

    @property
    def queue_depth(self) -> int:
        return self._gate.depth if self._gate is not None else 0

    async def admit(self, headers: Mapping[str, str], ctx: AdmissionContext) -> Ticket:
        """Admit the request or raise Rejection (an HTTPError: 400/401/429/503)."""
        tenant = self._identify(headers)
        lease: _Lease | None = None
        completion = self._completion_reserve(tenant, ctx)
        reserve = 0 if tenant.limits.tokens_per_minute is None else ctx.estimated_prompt_tokens + completion
        try:
            priority = self._priority(headers, tenant)
            self._check_slo()
            lease = await self._take_quota(tenant, reserve) if tenant.limits.any else None
            waited = await self._gate.enter(priority, *self._queue_timeout()) if self._gate else 0.0
        except BaseException as exc:  # Rejection, or the client went away while queued
            if isinstance(exc, Rejection):
                self.metrics.rejected[(exc.reason, tenant.name)] += 1
                self.metrics.rejected_status[exc.status] += 1
            if lease is not None:  # give back the slot and the whole reservation
                self._settle(tenant, lease.lease_id, lease.local, -reserve)
            raise
        self._drain.begin()
        self.metrics.admitted[tenant.name] += 1
        self.metrics.in_flight[tenant.name] += 1
        self.metrics.queue_wait.observe(waited)
        return Ticket(tenant, queue_wait_s=waited, lease_id=lease.lease_id if lease else None,
                      local_lease=lease.local if lease else False,
                      estimated_prompt_tokens=ctx.estimated_prompt_tokens,
                      reserved_completion=completion,
                      reserved_tokens=reserve if lease else 0, on_release=self._released)

    def _completion_reserve(self, tenant: Tenant, ctx: AdmissionContext) -> int:
        """Completion tokens reserved at admission (with the prompt estimate, what is taken from
        tokens_per_minute) and charged when the real count stays unknown: the request's max_tokens
        or the default, at most the tenant's tokens_per_minute — a client's max_tokens of 1e19
        must not put its tenant into years of debt, nor overflow the shared store's key expiry."""
        completion = ctx.completion_reserve(self.config.reserve_completion_tokens)
        limit = tenant.limits.tokens_per_minute
        return completion if limit is None else min(completion, limit)

    def authenticate(self, headers: Mapping[str, str]) -> None:
        """Raise the 401 Rejection when API keys are configured and `headers` carry no valid one.

        The gateway calls it before reading anything else of a request (and on /v1/models), so an
        unauthenticated client learns nothing but "401"; `admit` identifies the tenant again.
        """
        self._identify(headers)

    def _identify(self, headers: Mapping[str, str]) -> Tenant:
        if self._keyring is None:
            return _ANONYMOUS
        try:
            return self._keyring.identify(headers)
        except Rejection as exc:
            self.metrics.rejected[(exc.reason, "unknown")] += 1
            self.metrics.rejected_status[exc.status] += 1
            raise

    def _priority(self, headers: Mapping[str, str], tenant: Tenant) -> int:
        name = self.config.priority_header
        raw = headers.get(name) if name else None
        return request_priority(raw, name or "", tenant.priority)

    def _check_slo(self) -> None:
        if self.config.ttft_slo_ms is None:
            return
        budget_ms = self.config.ttft_slo_ms * SLO_QUEUE_SHARE
        rate = self._drain.per_second()
        estimate = estimate_wait(self._capacity.load_snapshot(), self.queue_depth,
                                 self._capacity.has_capacity(), rate)
        self._last_estimate = estimate
        if misses_slo(estimate, budget_ms):
            wait = (f"{estimate.wait_s * 1000:.0f} ms" if math.isfinite(estimate.wait_s) else
                    f"unbounded ({estimate.backlog} waiting, none finished yet)")
            raise too_many("slo_shed", f"estimated wait before the first token {wait} would "
                                       f"miss --ttft-slo-ms={self.config.ttft_slo_ms:g}",
                           retry_after_s(estimate.backlog, rate, fallback_s=1.0))

    async def _take_quota(self, tenant: Tenant, reserve: int) -> _Lease:
        lease_id, local = uuid.uuid4().hex, False
        try:
            verdict = await self._store.acquire(tenant, lease_id, reserve)
            self._local.reset()
        except QuotaUnavailable:
            if not self.config.quota_fail_open:
                self.metrics.quota_unavailable["refused"] += 1
                raise Rejection(503, "quota_unavailable",
                                "tenant quota backend is unavailable and --no-quota-fail-open is set",
                                retry_after_s=1) from None
            self.metrics.quota_unavailable["local_share"] += 1
            verdict, local = self._local.acquire(tenant, lease_id, reserve), True
        if not verdict.allowed:
            where = f" (this gateway's share {self._local.share():.2g}: quota backend down)" if local else ""
            raise too_many(verdict.limit or "quota", f"tenant {tenant.name!r} is over its "
                           f"{verdict.limit} limit ({verdict.limit_value}){where}",
                           max(1, math.ceil(verdict.retry_after_s)))
        return _Lease(lease_id, local)

    def _queue_timeout(self) -> tuple[float, str]:
        """Queue wait bound: in SLO mode a request that can no longer make it is shed, not run late."""
        slo_ms = self.config.ttft_slo_ms
        if slo_ms is not None and slo_ms * SLO_QUEUE_SHARE / 1000.0 < self.config.queue_timeout_s:
            return slo_ms * SLO_QUEUE_SHARE / 1000.0, "slo_queue_timeout"
        return self.config.queue_timeout_s, "queue_timeout"

    def _released(self, ticket: Ticket, prompt_tokens: int, completion_tokens: int | None) -> None:
        name = ticket.tenant.name
        self.metrics.in_flight[name] -= 1
        self.metrics.tokens[(name, "prompt")] += prompt_tokens
        self.metrics.tokens[(name, "completion")] += completion_tokens or 0
        self._drain.record()
        limits = ticket.tenant.limits
        if ticket.lease_id is not None or limits.tokens_per_minute is not None:
            # Settle: the real count (or the reserve when unknown) minus what admission reserved.
            delta = ticket.charge(prompt_tokens, completion_tokens) - ticket.reserved_tokens
            self._settle(ticket.tenant, ticket.lease_id or "", ticket.local_lease, delta)

    def _settle(self, tenant: Tenant, lease_id: str, local: bool, tokens: int) -> None:
        if local:
            self._local.release(tenant, lease_id, tokens)
        else:
            self._spawn(self._store.release(tenant, lease_id, tokens))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._background.spawn(_quietly(coro))

    async def _pump_forever(self) -> None:
        while True:
            await asyncio.sleep(PUMP_INTERVAL_S)
            self.on_capacity_freed()

    def metrics_text(self) -> str:
        """Prometheus text (dpserve_admission_*, dpserve_tenant_*, dpserve_quota_*)."""
        return self.metrics.render(Gauges(
            queue_depth=self.queue_depth, drain_rate_per_s=self._drain.per_second() or 0.0,
            estimated_wait_s=(self._last_estimate.wait_s if self._last_estimate
                              and math.isfinite(self._last_estimate.wait_s) else None),
            backend=self._store.name, backend_up=self._store.is_up(),
            local_share=self._local.share() if self._local.active else None))


async def _quietly(coro: Coroutine[Any, Any, None]) -> None:
    # A failed release is not the client's problem: leases expire and token debt is best effort.
    with contextlib.suppress(QuotaUnavailable):
        await coro


def build_admission(config: AdmissionConfig, capacity: CapacityView, *,
                    clock: Callable[[], float] = time.monotonic) -> Admission:
    """Admission for a gateway; reads --api-keys now (ConfigError if bad). Call start() before use."""
    keyring = load_key_file(config.api_keys) if config.api_keys is not None else None
    return Admission(config, capacity, keyring=keyring,
                     store=build_quota_store(config.redis_url, clock, fail_open=config.quota_fail_open),
                     clock=clock)
