"""CPU per request of the gateway's proxy alone (gateway/proxy.py): no sockets, no HTTP front.

`Proxy.handle` over a fake upstream pool that answers at once (a small JSON body), with the real
registry, `cache_aware` policy, admission (pass-through) and metrics, n times; prints CPU µs per
request. Compare source trees by putting each first on PYTHONPATH, alternating:

    for i in 1 2 3; do for t in /tmp/before src; do
        echo "$t $(PYTHONPATH=$t .venv/bin/python benchmarks/proxy_micro.py 20000)"; done; done
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any

import orjson
import uvloop
from multidict import CIMultiDict

from dpserve.config import build_config
from dpserve.gateway.admission import AdmissionConfig, build_admission
from dpserve.gateway.aliases import ModelAliases
from dpserve.gateway.config import BreakerConfig, RetryConfig
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.policies import build_policy
from dpserve.gateway.policies.config import PolicyConfig
from dpserve.gateway.proxy import Proxy
from dpserve.gateway.registry import WorkerRegistry

WARMUP = 2000


class _Response:
    def __init__(self) -> None:
        self.status = 200
        self.headers = {"content-type": "application/json"}

    async def read(self, timeout_s: float | None = None) -> bytes:
        return b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}'

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Upstream:
    async def post(self, *args: Any, **kwargs: Any) -> _Response:
        return _Response()


class _Sink:
    async def whole(self, status: int, headers: dict[str, str], body: bytes) -> None:
        pass


class _Health:
    def report_refused(self, worker: Any) -> None:
        pass


async def _measure(n: int) -> float:
    clock = time.monotonic
    policy = build_policy(PolicyConfig(policy="cache_aware", seed=1), clock=clock)
    registry = WorkerRegistry(policy, BreakerConfig(), clock, lambda weight: None)
    for url in ("http://a:1", "http://b:1"):
        registry.add(url).healthy = True
    proxy = Proxy(build_config(RetryConfig, {}), registry, policy, _Health(),  # type: ignore[arg-type]
                  build_admission(AdmissionConfig(), registry, clock=clock), GatewayMetrics("cache_aware"),
                  _Upstream(), ModelAliases({}), random.Random(0), clock)  # type: ignore[arg-type]
    headers = CIMultiDict([("Host", "gw"), ("Content-Type", "application/json"),
                           ("Authorization", "Bearer k"), ("User-Agent", "AsyncOpenAI/Python")])
    bodies = [orjson.dumps({"model": "m", "max_tokens": 16, "messages": [
        {"role": "user", "content": f"You are assistant number {i % 8}. " * 8 + f"question {i}"}]})
        for i in range(1000)]
    for i in range(WARMUP):
        await proxy.handle("/v1/chat/completions", headers, bodies[i % 1000], _Sink())
    start = time.process_time()
    for i in range(n):
        await proxy.handle("/v1/chat/completions", headers, bodies[i % 1000], _Sink())
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    uvloop.install()
    print(f"{asyncio.run(_measure(n)):.2f}")


if __name__ == "__main__":
    main()
