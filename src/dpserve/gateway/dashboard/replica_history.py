"""ReplicaHistory: one replica's recent /metrics scrapes (bounded) → its rates, last-minute quantiles, window.

Scrapes arrive from the gateway's load poller; only the series the dashboard reads are kept, so
a scrape costs a few KB however much else the replica exports.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpserve import diagnosis as dx
from dpserve.gateway.dashboard.timed_window import TimedWindow
from dpserve.prometheus_text import Exposition, bucket_delta, histogram_quantile, rate

PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
# Exported by dpserve's own replicas (issue 19); read when present.
MAX_NUM_SEQS = "dpserve:max_num_seqs"
_KEPT_VALUES = (dx.RUNNING, dx.WAITING, dx.KV_USAGE, dx.PREEMPTIONS, dx.GENERATION_TOKENS,
                PREFIX_QUERIES, PREFIX_HITS, MAX_NUM_SEQS)
_KEPT_BUCKETS = (dx.TTFT, dx.TPOT)
KEPT_SERIES = frozenset(_KEPT_VALUES + _KEPT_BUCKETS)  # for parse_exposition(text, only=...)

# Latency quantiles and the prefix-cache hit rate are over this window ("the last minute").
MINUTE_S = 60.0
# Token rates are over this window: short enough to follow a change, long enough not to jitter.
RATE_WINDOW_S = 5.0


@dataclass(frozen=True)
class ReplicaStats:
    """What the dashboard shows of one replica's own metrics (None = not known yet)."""

    running: float
    waiting: float
    kv_cache_usage: float
    generation_tokens_per_s: float | None
    preemptions_per_s: float | None
    prefix_cache_hit_rate: float | None
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    max_num_seqs: int | None


def slim(exposition: Exposition) -> Exposition:
    """The part of a scrape the dashboard reads."""
    values = {k: v for k in _KEPT_VALUES if (v := exposition.values.get(k)) is not None}
    buckets = {k: b for k in _KEPT_BUCKETS if (b := exposition.buckets.get(k)) is not None}
    return Exposition(values, buckets)


class ReplicaHistory:
    """Timed scrapes of one replica over a little more than `span_s`, each window ending at the newest.

    At most one scrape (or held copy) per sampler tick is added, so `max_scrapes` bounds the memory
    even if the clock stalls.
    """

    def __init__(self, span_s: float = MINUTE_S, max_scrapes: int = 128) -> None:
        self._scrapes: TimedWindow[Exposition] = TimedWindow(span_s, max_scrapes)

    def __len__(self) -> int:
        return len(self._scrapes)

    def add(self, t: float, exposition: Exposition) -> None:
        """Keep a scrape taken at `t` (older or equal to the last one: ignored)."""
        self._scrapes.add(t, slim(exposition))

    def hold(self, t: float) -> None:
        """The newest scrape still describes the replica at `t` (it is idle and will not be scraped
        again until work comes back): windows then end at `t`, so its rates decay to 0 within
        RATE_WINDOW_S and its last-minute figures age out, instead of repeating the last scrape's."""
        newest = self._scrapes.last()
        if newest is not None:
            self._scrapes.add(t, newest[1])

    def stats(self) -> ReplicaStats | None:
        newest = self._scrapes.last()
        if newest is None:
            return None
        t1, last = newest
        t_rate, base_rate = self._scrapes.base(t1 - RATE_WINDOW_S)
        t_min, base_min = self._scrapes.base(t1 - MINUTE_S)
        ttft = bucket_delta(base_min.buckets.get(dx.TTFT), last.buckets.get(dx.TTFT)) if t_min < t1 else ()
        queries = _delta(base_min, last, PREFIX_QUERIES)
        hits = _delta(base_min, last, PREFIX_HITS)
        return ReplicaStats(
            running=last.get(dx.RUNNING) or 0.0, waiting=last.get(dx.WAITING) or 0.0,
            kv_cache_usage=last.get(dx.KV_USAGE) or 0.0,
            generation_tokens_per_s=_rate(base_rate, last, dx.GENERATION_TOKENS, t1 - t_rate),
            preemptions_per_s=_rate(base_rate, last, dx.PREEMPTIONS, t1 - t_rate),
            prefix_cache_hit_rate=hits / queries if queries and hits is not None else None,
            ttft_p50_s=histogram_quantile(0.5, ttft), ttft_p99_s=histogram_quantile(0.99, ttft),
            max_num_seqs=_max_num_seqs(last))

    def window(self, replica_id: str, span_s: float, *, healthy: bool) -> dx.ReplicaWindow:
        """The diagnosis window over the last `span_s` of scrapes (at least the last two)."""
        newest = self._scrapes.last()
        if newest is None:
            return dx.ReplicaWindow(replica_id, healthy=healthy)
        recent = self._scrapes.since(newest[0] - span_s, at_least=2)
        return dx.window_from_scrapes(replica_id, recent, healthy=healthy,
                                      max_num_seqs=_max_num_seqs(newest[1]))


def _max_num_seqs(scrape: Exposition) -> int | None:
    return dx.max_num_seqs_of(scrape.get(MAX_NUM_SEQS))


def _delta(before: Exposition, after: Exposition, name: str) -> float | None:
    """Increase of a counter; a reset (the replica restarted) counts from zero."""
    new = after.get(name)
    if new is None:
        return None
    old = before.get(name)
    return new - old if old is not None and old <= new else new


def _rate(before: Exposition, after: Exposition, name: str, seconds: float) -> float | None:
    if seconds <= 0 or after.get(name) is None:
        return None
    return rate(before.get(name), after.get(name), seconds)
