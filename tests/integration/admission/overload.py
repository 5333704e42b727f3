"""3× overload on simulated replicas through a real gateway: the fleet, the clients, what they saw.

Shared by the e2e test (`test_overload_sheds_to_keep_ttft_slo.py`) and the benchmark that
publishes the numbers (`bench_overload.py`), so both measure the same thing.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.conftest import free_port
from tests.support import dpserve_process, wait_http_ok

NUM_REPLICAS = 2
SLOTS_PER_REPLICA = 4
CLIENTS = 3 * NUM_REPLICAS * SLOTS_PER_REPLICA  # 3× what the fleet runs at once
# 40 ms per engine step and 50 tokens: ~2 s per request, so the fleet finishes ~4 requests/s.
SIM_FLAGS = ("--max-num-seqs", str(SLOTS_PER_REPLICA), "--step-base-ms", "40")
MAX_TOKENS = 50
RETRY_PAUSE_S = 0.05  # a refused client tries again after this


@dataclass
class Outcomes:
    """Per request: time to first token of the admitted, time to the 429 of the refused."""

    ttft_s: list[float] = field(default_factory=list)
    rejected_s: list[float] = field(default_factory=list)
    rejections_without_retry_after: int = 0
    other_status: list[int] = field(default_factory=list)
    duration_s: float = 0.0

    def summary(self, slo_s: float) -> dict[str, float]:
        """Offered load, admitted TTFT p50/p99/max, share over the SLO, rejects and their latency."""
        def pct(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
        sent = len(self.ttft_s) + len(self.rejected_s) + len(self.other_status)
        return {"offered_per_s": sent / self.duration_s, "admitted": len(self.ttft_s),
                "ttft_p50_ms": pct(self.ttft_s, 0.5) * 1e3, "ttft_p99_ms": pct(self.ttft_s, 0.99) * 1e3,
                "ttft_max_ms": max(self.ttft_s, default=float("nan")) * 1e3,
                "over_slo": sum(t > slo_s for t in self.ttft_s), "rejected": len(self.rejected_s),
                "reject_p50_ms": (statistics.median(self.rejected_s) * 1e3 if self.rejected_s
                                  else float("nan")),
                "reject_p99_ms": pct(self.rejected_s, 0.99) * 1e3, "other": len(self.other_status)}


@contextmanager
def overloaded_fleet(router_flags: Sequence[str], log_dir: Path) -> Iterator[str]:
    """NUM_REPLICAS sims and a router with `router_flags`; yields the router's URL."""
    with ExitStack() as stack:
        urls = []
        for i in range(NUM_REPLICAS):
            port = free_port()
            stack.enter_context(dpserve_process(["sim", "--port", str(port), *SIM_FLAGS], port,
                                                log_path=log_dir / f"sim{i}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        port = free_port()
        proc = stack.enter_context(dpserve_process(
            ["router", "--port", str(port), "--worker-urls", *urls, *router_flags], port,
            log_path=log_dir / "gateway.log"))
        wait_http_ok(f"http://127.0.0.1:{port}/readiness", 60.0, proc)
        yield f"http://127.0.0.1:{port}"


async def _one(session: aiohttp.ClientSession, url: str, out: Outcomes) -> None:
    body = {"model": "smollm2-135m", "prompt": "tell me a story " * 8, "max_tokens": MAX_TOKENS,
            "stream": True, "ignore_eos": True}
    started = time.monotonic()
    async with session.post(f"{url}/v1/completions", json=body) as resp:
        if resp.status == 429:
            out.rejected_s.append(time.monotonic() - started)
            out.rejections_without_retry_after += "Retry-After" not in resp.headers
            assert (await resp.json())["error"]["type"] == "rate_limit_error"
            await asyncio.sleep(RETRY_PAUSE_S)
            return
        if resp.status != 200:
            out.other_status.append(resp.status)
            return
        first = True
        async for _line in resp.content:
            if first:
                out.ttft_s.append(time.monotonic() - started)
                first = False


async def drive(url: str, duration_s: float, clients: int = CLIENTS) -> Outcomes:
    """`clients` closed-loop clients for `duration_s`; a refused one retries after a short pause."""
    out = Outcomes()
    deadline = time.monotonic() + duration_s
    started = time.monotonic()

    async def client() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            while time.monotonic() < deadline:
                await _one(session, url, out)
    await asyncio.gather(*(client() for _ in range(clients)))
    out.duration_s = time.monotonic() - started
    return out
