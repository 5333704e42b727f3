"""Queueing trace of one run: each sim's running/waiting gauges sampled on a thread while the bench runs.

Summarised as what the table cannot show: how unevenly the replicas were loaded *at the same moment*
(mean spread of running requests across replicas, worst moment) and how much queued.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"


def _metrics(url: str, timeout_s: float) -> list[tuple[str, str, float]]:
    """(name, labels, value) of each sample on `url`/metrics; raises OSError when unreachable."""
    with urllib.request.urlopen(url + "/metrics", timeout=timeout_s) as resp:
        text = resp.read().decode()
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        try:
            out.append((name, labels.rstrip("}"), float(value)))
        except ValueError:
            continue
    return out


def _metrics_or_none(url: str) -> list[tuple[str, str, float]]:
    try:
        return _metrics(url, 2.0)
    except OSError:
        return []


def _gauges(url: str) -> tuple[float, float]:
    values = {RUNNING: 0.0, WAITING: 0.0}
    for name, _, value in _metrics(url, 1.0):
        if name in values:
            values[name] += value
    return values[RUNNING], values[WAITING]


def policy_decisions(router_url: str) -> dict[str, float]:
    """dpserve_policy_decisions_total by reason from a dpserve gateway's /metrics ({} for others)."""
    out: dict[str, float] = {}
    for name, labels, value in _metrics_or_none(router_url):
        if name == "dpserve_policy_decisions_total" and 'reason="' in labels:
            reason = labels.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = out.get(reason, 0.0) + value
    return out


def kv_counters(router_url: str) -> dict[str, float]:
    """A dpserve gateway's dpserve_kv_* figures (summed over replicas): did its KV-event state hold?"""
    out: dict[str, float] = {}
    for name, _, value in _metrics_or_none(router_url):
        if name.startswith("dpserve_kv_"):
            out[name] = out.get(name, 0.0) + value
    return out


def mean_ttft_ms(urls: list[str], metric: str) -> float | None:
    """Mean of a TTFT histogram (`metric`_sum / _count) over the /metrics of `urls`; None if absent.

    Against the client's TTFT it says where a difference is spent: in the replicas (their
    `vllm:time_to_first_token_seconds`) or between the client and them (the gateway)."""
    total = count = 0.0
    for url in urls:
        for name, _, value in _metrics_or_none(url):
            if name == metric + "_sum":
                total += value
            elif name == metric + "_count":
                count += value
    return total / count * 1e3 if count else None


def summarize_samples(samples: list[list[tuple[float, float]]]) -> dict[str, Any]:
    """Per sample time the list of (running, waiting) per replica → spread and queueing figures."""
    busy = [s for s in samples if sum(r for r, _ in s) > 0]
    if not busy:
        return {"samples": 0}
    spreads = [max(r for r, _ in s) - min(r for r, _ in s) for s in busy]
    peaks = [max(r for r, _ in s) for s in busy]
    return {
        "samples": len(busy),
        "running_spread_mean": sum(spreads) / len(busy),
        "running_spread_max": max(spreads),
        "running_peak_mean": sum(peaks) / len(busy),
        "waiting_mean": sum(sum(w for _, w in s) for s in busy) / len(busy),
    }


@contextmanager
def sampled(workers: Sequence[str], interval_s: float, out: dict[str, Any]) -> Iterator[None]:
    """Sample `workers`' gauges every `interval_s` until the block ends; the summary lands in `out`."""
    samples: list[list[tuple[float, float]]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                samples.append([_gauges(w) for w in workers])
            except OSError:
                continue

    thread = threading.Thread(target=loop, name="gauge-sampler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        out.update(summarize_samples(samples))
        out["timeline"] = [[r for r, _ in s] for s in samples]
