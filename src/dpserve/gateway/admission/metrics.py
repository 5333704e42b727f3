"""AdmissionMetrics: admission counters and the queue-wait histogram, rendered as Prometheus text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from dpserve.prometheus import Histogram, histogram_block

WAIT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


@dataclass(frozen=True)
class Gauges:
    """Point-in-time values read when /metrics is scraped."""

    queue_depth: int
    drain_rate_per_s: float
    estimated_wait_s: float | None
    backend: str
    backend_up: bool
    local_share: float | None = None  # set while limits are enforced locally (backend down)


class AdmissionMetrics:
    """Counters updated on the request path (dict increments only) and rendered on scrape."""

    def __init__(self) -> None:
        self.admitted: Counter[str] = Counter()
        self.rejected: Counter[tuple[str, str]] = Counter()  # (reason, tenant)
        self.rejected_status: Counter[int] = Counter()  # HTTP status of each refusal (429s: shed)
        self.tokens: Counter[tuple[str, str]] = Counter()  # (tenant, prompt|completion)
        self.in_flight: Counter[str] = Counter()
        self.quota_unavailable: Counter[str] = Counter()  # served | refused
        self.queue_wait = Histogram(WAIT_BUCKETS_S)

    def render(self, gauges: Gauges) -> str:
        lines = [
            *_gauge("dpserve_admission_queue_depth", "requests waiting in the gateway queue",
                    [((), gauges.queue_depth)]),
            *histogram_block("dpserve_admission_queue_wait_seconds",
                             "time admitted requests waited in the queue", self.queue_wait),
            *_gauge("dpserve_admission_drain_rate", "requests finished per second (recent window)",
                    [((), round(gauges.drain_rate_per_s, 4))]),
            *_counter("dpserve_admission_admitted_total", "requests admitted",
                      [((("tenant", t),), n) for t, n in sorted(self.admitted.items())]),
            *_counter("dpserve_admission_rejected_total", "requests refused at admission",
                      [((("reason", r), ("tenant", t)), n) for (r, t), n in sorted(self.rejected.items())]),
            *_counter("dpserve_admission_rejected_by_status_total", "requests refused at admission, by "
                      "the HTTP status answered", [((("status", str(s)),), n)
                                                   for s, n in sorted(self.rejected_status.items())]),
            *_counter("dpserve_tenant_tokens_total", "prompt and completion tokens served",
                      [((("tenant", t), ("kind", k)), n) for (t, k), n in sorted(self.tokens.items())]),
            *_gauge("dpserve_tenant_in_flight", "admitted requests not finished yet",
                    [((("tenant", t),), n) for t, n in sorted(self.in_flight.items())]),
            *_gauge("dpserve_quota_backend_up", "1 while the tenant quota backend answers",
                    [((("backend", gauges.backend),), int(gauges.backend_up))]),
            *_counter("dpserve_quota_unavailable_total",
                      "requests that met an unreachable quota backend, by what was done",
                      [((("action", a),), n) for a, n in sorted(self.quota_unavailable.items())]),
        ]
        lines += _gauge("dpserve_quota_local_share",
                        "share of each tenant limit this gateway enforces alone while the quota "
                        "backend is down (0 while the shared limits are in force)",
                        [((), round(gauges.local_share or 0.0, 4))])
        if gauges.estimated_wait_s is not None:
            lines += _gauge("dpserve_admission_estimated_wait_seconds",
                            "last estimated queueing delay (SLO mode)",
                            [((), round(gauges.estimated_wait_s, 4))])
        return "\n".join(lines) + "\n"


Sample = tuple[tuple[tuple[str, str], ...], float | int]


def _series(kind: str, name: str, help_text: str, samples: list[Sample]) -> list[str]:
    head = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    return head + [f"{name}{_labels(labels)} {value}" for labels, value in samples]


def _counter(name: str, help_text: str, samples: list[Sample]) -> list[str]:
    return _series("counter", name, help_text, samples)


def _gauge(name: str, help_text: str, samples: list[Sample]) -> list[str]:
    return _series("gauge", name, help_text, samples)
