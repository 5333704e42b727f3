"""Replica counters over a run: scrape vLLM-named /metrics before and after, take deltas → the
prefix-cache hit rate and each replica's share of finished requests (whatever router was in front)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from dpserve.http_names import METRICS_PATH

QUERIES = "vllm:prefix_cache_queries_total"
HITS = "vllm:prefix_cache_hits_total"
REQUESTS = "vllm:request_success_total"
SCRAPE_TIMEOUT_S = 10.0


def metric_sum(text: str, name: str) -> float | None:
    """Sum of every sample of `name` (all label sets) in Prometheus text; None when absent."""
    total: float | None = None
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name):]
        if rest[:1] not in ("{", " "):
            continue  # a longer metric name sharing this prefix
        value = rest.rsplit("}", 1)[-1].split()
        if value:
            total = (total or 0.0) + float(value[0])
    return total


@dataclass(frozen=True)
class Counters:
    """One scrape of one replica; a counter the replica does not export is None."""

    queries: float | None
    hits: float | None
    requests: float | None


def metrics_url(url: str) -> str:
    """Accept a replica base URL or its /metrics URL."""
    url = url.rstrip("/")
    return url if url.endswith(METRICS_PATH) else url + METRICS_PATH


async def scrape(http: aiohttp.ClientSession, url: str) -> Counters | None:
    """The counters of one replica; None when it is unreachable."""
    try:
        async with http.get(metrics_url(url), timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)) as r:
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    return Counters(metric_sum(text, QUERIES), metric_sum(text, HITS), metric_sum(text, REQUESTS))


async def scrape_all(http: aiohttp.ClientSession, urls: Sequence[str]) -> list[Counters | None]:
    return list(await asyncio.gather(*(scrape(http, u) for u in urls)))


def _delta(before: Counters | None, after: Counters | None, field: str) -> float | None:
    if before is None or after is None:
        return None
    b, a = getattr(before, field), getattr(after, field)
    return None if a is None or b is None else a - b


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def counters_report(urls: Sequence[str], before: Sequence[Counters | None],
                    after: Sequence[Counters | None]) -> dict[str, Any]:
    """{prefix_cache_hit_rate, replica_requests_share, replicas: {url: {queries, hits, hit_rate,
    requests}}}; a replica missing a scrape or a counter is left out of the totals."""
    per_url: dict[str, Any] = {}
    for url, b, a in zip(urls, before, after, strict=True):
        dq, dh, dr = _delta(b, a, "queries"), _delta(b, a, "hits"), _delta(b, a, "requests")
        hit_rate = _ratio(dh, dq) if dq is not None and dh is not None else None
        per_url[url] = {"queries": dq, "hits": dh, "hit_rate": hit_rate, "requests": dr}
    cache = [v for v in per_url.values() if v["queries"] is not None and v["hits"] is not None]
    total_requests = sum(v["requests"] or 0.0 for v in per_url.values())
    return {
        "prefix_cache_hit_rate": _ratio(sum(v["hits"] for v in cache), sum(v["queries"] for v in cache)),
        "replica_request_share": {url: _ratio(v["requests"], total_requests)
                                  for url, v in per_url.items() if v["requests"] is not None},
        "replicas": per_url,
    }
