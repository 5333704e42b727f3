"""`plan --diagnose URL`: watch a running gateway's replicas over a window and name the bottleneck.

The gateway's `/workers` lists the replicas (with the admin key as a bearer token when one is
given: `/workers` may sit behind it); each replica's `/metrics` is scraped `--scrapes` times over
`--window-s`; dpserve.diagnosis turns the windows into the verdict — the same rules the dashboard
uses, so both say the same words for the same fleet.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict
from typing import Any

import aiohttp

from dpserve.config import ConfigError
from dpserve.diagnosis import Diagnosis, ReplicaWindow, Slo, diagnose_fleet, window_from_scrapes
from dpserve.planner.config import ADMIN_KEY_ENV, PlanConfig
from dpserve.planner.report import format_table
from dpserve.prometheus_text import Exposition, parse_exposition

REQUEST_TIMEOUT_S = 5.0
EXIT_UNREACHABLE = 1


class FleetUnreachable(RuntimeError):
    """The gateway did not answer /workers; the message says how."""


async def list_workers(http: aiohttp.ClientSession, url: str, admin_key: str | None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    try:
        async with http.get(url.rstrip("/") + "/workers", headers=headers) as resp:
            status, text = resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise FleetUnreachable(f"cannot read {url}/workers: {exc or type(exc).__name__}") from exc
    if status == 401:
        raise ConfigError(f"{url}/workers needs the admin key: pass --admin-key or set {ADMIN_KEY_ENV}")
    if status != 200:
        raise FleetUnreachable(f"{url}/workers answered HTTP {status}")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise FleetUnreachable(f"{url}/workers did not answer JSON") from exc
    if not isinstance(body, list) or not all(isinstance(w, dict) and "url" in w for w in body):
        raise FleetUnreachable(f"{url}/workers is not a dpserve gateway's worker list")
    return body


async def _scrape(http: aiohttp.ClientSession, replica_url: str) -> Exposition | None:
    try:
        async with http.get(replica_url.rstrip("/") + "/metrics") as resp:
            return parse_exposition(await resp.text()) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def watch(url: str, *, admin_key: str | None, window_s: float, scrapes: int) -> list[ReplicaWindow]:
    """Every replica's window: `scrapes` scrapes spread evenly over `window_s` seconds."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        workers = await list_workers(http, url, admin_key)
        seen: list[list[tuple[float, Exposition]]] = [[] for _ in workers]
        start = time.monotonic()
        for i in range(scrapes):
            await asyncio.sleep(max(0.0, start + i * window_s / (scrapes - 1) - time.monotonic()))
            now = time.monotonic()
            results = await asyncio.gather(*(_scrape(http, str(w["url"])) for w in workers))
            for series, exp in zip(seen, results, strict=True):
                if exp is not None:
                    series.append((now, exp))
        final = {str(w.get("id")): bool(w.get("healthy")) for w in await list_workers(http, url, admin_key)}
    ids = [str(w.get("id")) for w in workers]
    return [window_from_scrapes(i, series, healthy=bool(series) and final.get(i, False))
            for i, series in zip(ids, seen, strict=True)]


async def diagnose_url(url: str, *, admin_key: str | None, window_s: float, scrapes: int,
                       slo: Slo = Slo()) -> tuple[Diagnosis, list[ReplicaWindow]]:
    windows = await watch(url, admin_key=admin_key, window_s=window_s, scrapes=scrapes)
    return diagnose_fleet(windows, slo), windows


def diagnosis_json(d: Diagnosis, windows: list[ReplicaWindow]) -> dict[str, Any]:
    def finding(f: Any) -> dict[str, Any]:
        return {"state": f.state.value, "replica": f.replica_id, "message": f.message, "evidence": f.evidence}

    return {"fleet": finding(d.fleet), "bottleneck": d.bottleneck,
            "replicas": [finding(f) for f in d.replicas], "windows": [asdict(w) for w in windows]}


def diagnosis_text(d: Diagnosis, windows: list[ReplicaWindow]) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1e3:.0f}"

    rows = [[w.replica_id, f.state.value, f"{w.running:.1f}", f"{w.waiting:.1f}", f"{w.kv_cache_usage:.0%}",
             f"{w.preemptions_per_s:.2f}", f"{w.generation_tokens_per_s:.0f}", ms(w.tpot_p50_s),
             ms(w.ttft_p99_s), "-" if w.max_num_seqs is None else str(w.max_num_seqs)]
            for w, f in zip(windows, d.replicas, strict=True)]
    header = ("replica", "state", "running", "waiting", "KV used", "preempt/s", "gen tok/s", "TPOT p50 ms",
              "TTFT p99 ms", "max seqs")
    return "\n".join([format_table(rows, header), "", f"fleet: {d.fleet.state.value} — {d.fleet.message}"])


def run_diagnose(config: PlanConfig) -> int:
    import orjson

    assert config.diagnose is not None
    slo = Slo(tpot_s=None if config.tpot_slo_ms is None else config.tpot_slo_ms / 1e3,
              ttft_s=None if config.ttft_slo_ms is None else config.ttft_slo_ms / 1e3)
    try:
        d, windows = asyncio.run(diagnose_url(config.diagnose, admin_key=config.resolved_admin_key,
                                              window_s=config.window_s, scrapes=config.scrapes, slo=slo))
    except FleetUnreachable as exc:
        print(f"dpserve plan: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if config.as_json:
        sys.stdout.buffer.write(orjson.dumps(diagnosis_json(d, windows), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(diagnosis_text(d, windows))
    return 0
