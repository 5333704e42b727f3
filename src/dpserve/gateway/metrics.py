"""Gateway metrics in Prometheus text (`dpserve_` prefix): requests, latency, health, policy, retries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from dpserve.gateway.worker import Worker
from dpserve.prometheus import Histogram, histogram_block

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                      30.0, 60.0, 120.0)
# Migration gap: a prefill of the prompt and the answer so far elsewhere, up to a stall timeout.
_GAP_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    inner = ",".join(f'{n}="{v}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


def _counter(name: str, help_text: str, label_names: tuple[str, ...],
             counts: Mapping[tuple[str, ...], int]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    lines += [f"{name}{_labels(label_names, k)} {v}" for k, v in sorted(counts.items())]
    return lines


def _gauge(name: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [f"{name}{labels} {value}" for labels, value in samples]
    return lines


class GatewayMetrics:
    """Counters and histograms the proxy, health checker and breakers update; rendered on /metrics."""

    def __init__(self, policy_name: str) -> None:
        self.policy_name = policy_name
        self.requests: Counter[tuple[str, ...]] = Counter()          # (worker, status)
        self.decisions: Counter[tuple[str, ...]] = Counter()         # (policy, reason)
        self.retries: Counter[tuple[str, ...]] = Counter()                # (reason,)
        self.retries_exhausted: Counter[tuple[str, ...]] = Counter()
        self.health_checks: Counter[tuple[str, ...]] = Counter()     # (worker, result)
        self.transitions: Counter[tuple[str, ...]] = Counter()  # (worker, from, to)
        # Per replica, for the dashboard: tries on it that failed and were retried elsewhere, and
        # streams it served that moved to another replica (stream migration counts them).
        self.worker_retries: Counter[tuple[str, ...]] = Counter()     # (worker,)
        self.worker_migrations: Counter[tuple[str, ...]] = Counter()  # (worker,)
        self.duration = Histogram(_LATENCY_BUCKETS_S)
        self.ttft = Histogram(_LATENCY_BUCKETS_S)
        self.migrations: Counter[tuple[str, ...]] = Counter()  # (reason, outcome)
        self.migration_gap = Histogram(_GAP_BUCKETS_S)

    def decision(self, reason: str) -> None:
        self.decisions[(self.policy_name, reason)] += 1

    def render(self, workers: list[Worker], policy_gauges: Mapping[str, float]) -> str:
        lines = _counter("dpserve_requests_total", "requests finished, by worker and HTTP status",
                         ("worker", "status"), self.requests)
        lines += histogram_block("dpserve_request_duration_seconds", "request duration at the gateway",
                                 self.duration)
        lines += histogram_block("dpserve_time_to_first_token_seconds",
                                 "time to the first response byte relayed to the client", self.ttft)
        lines += _gauge("dpserve_worker_in_flight", "requests sent to the worker and not finished",
                        ((f'{{worker="{w.id}"}}', w.in_flight) for w in workers))
        lines += _gauge("dpserve_worker_healthy", "1 when the worker is healthy",
                        ((f'{{worker="{w.id}"}}', int(w.healthy)) for w in workers))
        lines += _gauge("dpserve_worker_circuit_state", "0 closed, 1 open, 2 half-open",
                        ((f'{{worker="{w.id}"}}', w.circuit_value) for w in workers))
        lines += _gauge("dpserve_worker_load", "polled load plus in-flight change since the poll",
                        ((f'{{worker="{w.id}"}}', w.load()) for w in workers))
        lines += _counter("dpserve_policy_decisions_total", "routing decisions by policy and reason",
                          ("policy", "reason"), self.decisions)
        lines += _counter("dpserve_retries_total", "retries by reason", ("reason",), self.retries)
        lines += ["# TYPE dpserve_retries_exhausted_total counter",
                  f"dpserve_retries_exhausted_total {self.retries_exhausted[()]}"]
        lines += _counter("dpserve_worker_retries_total", "failed tries on the worker that were retried "
                          "on another", ("worker",), self.worker_retries)
        lines += _counter("dpserve_worker_stream_migrations_total", "streams that moved from the worker "
                          "to another mid-response", ("worker",), self.worker_migrations)
        lines += _counter("dpserve_health_checks_total", "health probes by worker and result",
                          ("worker", "result"), self.health_checks)
        lines += _counter("dpserve_circuit_transitions_total", "circuit state changes",
                          ("worker", "from", "to"), self.transitions)
        lines += _counter("dpserve_stream_migrations_total",
                          "responses cut after their first byte, by why and what became of them",
                          ("reason", "outcome"), self.migrations)
        lines += histogram_block("dpserve_stream_migration_gap_seconds",
                                 "from a stream's break to the next token relayed to its client",
                                 self.migration_gap)
        for name, value in policy_gauges.items():
            lines += _gauge(name, "routing policy gauge", [("", value)])
        return "\n".join(lines) + "\n"
