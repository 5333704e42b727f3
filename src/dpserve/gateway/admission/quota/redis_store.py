"""RedisQuotaStore: tenant counters in Redis, updated by Lua scripts, shared by every gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from dpserve.aio import cancel_and_wait, cancel_kept, finish_all
from dpserve.gateway.admission.quota import redis_scripts
from dpserve.gateway.admission.quota.base import ALLOWED, QuotaStore, QuotaUnavailable, QuotaVerdict
from dpserve.gateway.admission.tenants import Tenant

logger = logging.getLogger(__name__)

# How often a gateway announces itself in Redis (it counts as alive for 3 beats).
HEARTBEAT_INTERVAL_S = 2.0


class RedisQuotaStore(QuotaStore):
    """One limit for all gateways pointing at the same Redis.

    Each admission is one atomic script call. While Redis fails, calls raise QuotaUnavailable
    without touching the network for `retry_interval_s` (so an outage costs requests no latency),
    then the next call probes again. State changes are logged once per transition.
    Concurrency leases expire after `lease_ttl_s` unless renewed; this process renews the leases
    it holds every `lease_ttl_s / 3`, so a crashed gateway's slots free themselves. On the same
    beat it announces itself in a sorted set of live gateways and reads how many there are
    (`gateways_seen`): while Redis is down each one enforces its share of every limit locally.
    """

    name = "redis"

    def __init__(self, url: str, *, lease_ttl_s: float = 30.0, timeout_s: float = 0.5,
                 retry_interval_s: float = 1.0, key_prefix: str = "dpserve:quota",
                 while_down: str = "", clock: Callable[[], float] = time.monotonic,
                 heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self._url = url
        self._lease_ttl_s = lease_ttl_s
        self._timeout_s = timeout_s
        self._retry_interval_s = retry_interval_s
        self._prefix = key_prefix
        self._clock = clock
        self._while_down = while_down
        self._redis: Redis | None = None
        self._up = True
        self._down_until = 0.0
        self._leases: dict[str, tuple[Tenant, set[str]]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._scripts: dict[str, Any] = {}
        self._gateway_id = uuid.uuid4().hex
        self._heartbeat_interval_s = heartbeat_interval_s
        self._gateways_seen = 1

    async def start(self) -> None:
        self._redis = Redis.from_url(
            self._url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s,
            retry=Retry(NoBackoff(), 0), decode_responses=True)
        self._renewer = asyncio.create_task(self._renew_forever(), name="quota-lease-renewal")
        self._heartbeat = asyncio.create_task(self._heartbeat_forever(), name="quota-gateway-heartbeat")

    async def stop(self) -> None:
        await finish_all([lambda: cancel_and_wait(self._renewer), lambda: cancel_and_wait(self._heartbeat),
                          *([self._redis.aclose] if self._redis is not None else [])])

    def is_up(self) -> bool:
        return self._up

    def gateways_seen(self) -> int:
        return self._gateways_seen

    def _keys(self, tenant: Tenant) -> tuple[str, str, str]:
        # The {tenant} hash tag keeps one tenant's keys on one Redis Cluster slot (scripts need that).
        base = f"{self._prefix}:{{{tenant.name}}}"
        return f"{base}:rpm", f"{base}:tpm", f"{base}:conc"

    async def acquire(self, tenant: Tenant, lease_id: str, tokens: int = 0) -> QuotaVerdict:
        limits = tenant.limits
        rpm, tpm, conc = self._keys(tenant)
        allowed, limit, retry = await self._call(
            redis_scripts.ACQUIRE, [rpm, tpm, conc],
            [limits.requests_per_minute or 0, limits.tokens_per_minute or 0,
             limits.max_concurrency or 0, lease_id, self._lease_ttl_s, max(0, tokens)])
        if int(allowed) != 1:
            return QuotaVerdict(False, str(limit), getattr(limits, str(limit)), float(retry))
        if limits.max_concurrency is not None:
            self._leases.setdefault(tenant.name, (tenant, set()))[1].add(lease_id)
        return ALLOWED

    async def release(self, tenant: Tenant, lease_id: str, tokens: int) -> None:
        held = self._leases.get(tenant.name)
        if held is not None:
            held[1].discard(lease_id)
        _rpm, tpm, conc = self._keys(tenant)
        await self._call(redis_scripts.RELEASE, [tpm, conc],
                         [tenant.limits.tokens_per_minute or 0, tokens, lease_id])

    async def _call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        if self._redis is None:
            raise QuotaUnavailable("quota store not started")
        if not self._up and self._clock() < self._down_until:
            raise QuotaUnavailable(f"Redis at {self._url} is unreachable")
        try:
            # EVALSHA, falling back to EVAL once per script if the server does not know it yet.
            runner = self._scripts.get(script)
            if runner is None:
                runner = self._scripts[script] = self._redis.register_script(script)
            with cancel_kept():  # redis-py can lose a cancel (dpserve.aio): a stop, a client gone
                result = await runner(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._mark_down(exc)
            raise QuotaUnavailable(f"Redis at {self._url} is unreachable: {exc}") from exc
        self._mark_up()
        return result

    def _mark_down(self, exc: Exception) -> None:
        self._down_until = self._clock() + self._retry_interval_s
        if self._up:
            self._up = False
            logger.error("quota backend Redis %s is DOWN (%s)%s", self._url, exc,
                         f"; {self._while_down}" if self._while_down else "")

    def _mark_up(self) -> None:
        if not self._up:
            self._up = True
            logger.warning("quota backend Redis %s is UP again; tenant limits enforced", self._url)

    async def _heartbeat_forever(self) -> None:
        while True:
            with contextlib.suppress(QuotaUnavailable):
                seen = await self._call(redis_scripts.HEARTBEAT, [f"{self._prefix}:gateways"],
                                        [self._heartbeat_interval_s * 3, self._gateway_id])
                self._gateways_seen = max(1, int(seen))
            await asyncio.sleep(self._heartbeat_interval_s)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl_s / 3)
            for tenant, leases in list(self._leases.values()):
                if leases:
                    with contextlib.suppress(QuotaUnavailable):
                        await self._call(redis_scripts.RENEW, [self._keys(tenant)[2]],
                                         [self._lease_ttl_s, *leases])
