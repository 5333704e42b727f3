"""Cost of admit() + release() per request under each admission setup (µs), printed as a table.

usage: python -m tests.integration.admission.bench_admit_overhead [N]
The Redis row starts a throwaway redis-server on 127.0.0.1 (skipped if it is not installed).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dpserve.gateway.admission import AdmissionConfig, AdmissionContext, build_admission

from .quota_client import AlwaysRoom
from .redis_server import RedisServer

KEYS = "keys: [{key: k, tenant: t, requests_per_minute: 100000000, tokens_per_minute: 100000000, " \
       "max_concurrency: 1000}]"
CTX = AdmissionContext(400, 64)
HEADERS = {"Authorization": "Bearer k"}


async def _per_request_us(cfg: AdmissionConfig, n: int) -> float:
    adm = build_admission(cfg, AlwaysRoom())
    await adm.start()
    started = time.perf_counter()
    for _ in range(n):
        (await adm.admit(HEADERS, CTX)).release(100, 64)
        await asyncio.sleep(0)  # let the release reach the store, as a server's loop would
    elapsed = time.perf_counter() - started
    await adm.stop()
    return elapsed / n * 1e6


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys.yaml"
        keys.write_text(KEYS)
        setups = {
            "pass-through (no flags)": AdmissionConfig(),
            "cap + SLO (gate fast path)": AdmissionConfig(max_inflight_per_worker=8, ttft_slo_ms=500),
            "api keys + in-process quotas": AdmissionConfig(api_keys=keys),
        }
        for name, cfg in setups.items():
            print(f"{name:<34} {await _per_request_us(cfg, n):8.1f} µs/request")
        if shutil.which("redis-server") is None:
            print("redis-server not installed: Redis row skipped")
            return
        server = RedisServer(Path(tmp))
        server.start()
        try:
            cfg = AdmissionConfig(api_keys=keys, redis_url=server.url)
            print(f"{'api keys + Redis quotas':<34} {await _per_request_us(cfg, n // 10):8.1f} µs/request")
        finally:
            server.kill()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
