"""AdmissionConfig: the gateway's flags for queueing, SLO shedding and tenant quotas (issue 5)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from dpserve.config import option, require


@dataclass(frozen=True)
class AdmissionConfig:
    """Admission control flags. With none of them set, admission is a near-free pass-through.

    `quota_fail_open` defaults to True: tenant quotas are a fairness tool, and losing the quota
    backend (Redis) should not take the whole service down; capacity protection (cap, queue, SLO)
    is local to each gateway and keeps working either way. Pass `--no-quota-fail-open` where
    quotas are a billing boundary: then requests of tenants with limits get 503 while Redis is away.
    """

    max_inflight_per_worker: int | None = option(
        None, "requests one worker of weight 1 may hold at once (weighted by worker weight); above "
              "it requests wait in the gateway queue (default: no cap)")
    queue_size: int = option(1024, "most requests waiting in the gateway queue; a full queue answers 429")
    queue_timeout_s: float = option(
        30.0, "a queued request that cannot start within this many seconds gets 429 + Retry-After")
    priority_header: str | None = option(
        None, "header carrying a priority class 0..9 (lower is served first); it may only lower a "
              "request's priority below its tenant's class (the api-keys entry's `priority`, default 0)",
        metavar="HEADER")
    ttft_slo_ms: float | None = option(
        None, "time-to-first-token SLO: refuse at admission (429) when the estimated wait misses it",
        metavar="MS")
    api_keys: Path | None = option(
        None, "YAML file of API keys with tenant names and optional limits (requests_per_minute, "
              "tokens_per_minute, max_concurrency); enables 401 for missing/unknown keys",
        metavar="FILE.yaml")
    redis_url: str | None = option(
        None, "keep tenant quota counters in Redis so several gateways enforce one limit together",
        metavar="URL")
    reserve_completion_tokens: int = option(
        256, "tokens_per_minute: completion tokens reserved at admission for a request without "
             "max_tokens (with it, max_tokens is reserved); settled to the real count when it ends")
    quota_fail_open: bool = option(
        True, "when the quota backend is unreachable, keep serving, each tenant limited to this "
              "gateway's share of its limits (--quota-local-share) until it is back "
              "(--no-quota-fail-open answers 503 instead)")
    quota_local_share: float | None = option(
        None, "share (0..1] of every tenant limit this gateway enforces alone while Redis is down "
              "(default: 1 / the number of gateways it last saw in Redis)", metavar="FRACTION")

    def __post_init__(self) -> None:
        require(self.max_inflight_per_worker is None or self.max_inflight_per_worker >= 1,
                "--max-inflight-per-worker must be >= 1")
        require(self.queue_size >= 0, "--queue-size must be >= 0")
        require(self.reserve_completion_tokens >= 0, "--reserve-completion-tokens must be >= 0")
        require(self.queue_timeout_s > 0, "--queue-timeout-s must be > 0")
        require(self.ttft_slo_ms is None or self.ttft_slo_ms > 0, "--ttft-slo-ms must be > 0")
        require(self.priority_header is None or bool(self.priority_header.strip()),
                "--priority-header must be a header name")
        require(self.redis_url is None or self.redis_url.startswith(("redis://", "rediss://", "unix://")),
                "--redis-url must start with redis://, rediss:// or unix://")
        require(self.quota_local_share is None or 0 < self.quota_local_share <= 1,
                "--quota-local-share must be in (0, 1]")
        require(self.redis_url is None or self.api_keys is not None,
                "--redis-url needs --api-keys (quotas are per tenant)")

    def worker_cap(self, weight: float = 1.0) -> int | None:
        """In-flight cap of a worker with this weight (at least 1), or None when uncapped."""
        if self.max_inflight_per_worker is None:
            return None
        return max(1, math.floor(self.max_inflight_per_worker * weight + 0.5))
