"""GatewayMetrics: Prometheus text with the dpserve_ series, labels and histogram semantics."""

from __future__ import annotations

from dpserve.gateway.circuit_breaker import CircuitBreaker
from dpserve.gateway.config import BreakerConfig
from dpserve.gateway.metrics import GatewayMetrics
from dpserve.gateway.worker import Worker
from tests.unit.gateway.fakes import FakeClock


def test_render_has_every_series_with_labels() -> None:
    m = GatewayMetrics("cache_aware")
    w = Worker("w0", "http://a", 2.0, CircuitBreaker(BreakerConfig(), FakeClock()))
    w.healthy, w.in_flight = True, 3
    m.requests[("w0", "200")] += 2
    m.decision("cache_hit")
    m.retries[("connect_error",)] += 1
    m.retries_exhausted[()] += 1
    m.health_checks[("w0", "ok")] += 5
    m.transitions[("w0", "closed", "open")] += 1
    text = m.render([w], {"dpserve_cache_tree_chars": 42.0})
    for line in ('dpserve_requests_total{worker="w0",status="200"} 2',
                 'dpserve_policy_decisions_total{policy="cache_aware",reason="cache_hit"} 1',
                 'dpserve_retries_total{reason="connect_error"} 1', "dpserve_retries_exhausted_total 1",
                 'dpserve_health_checks_total{worker="w0",result="ok"} 5',
                 'dpserve_circuit_transitions_total{worker="w0",from="closed",to="open"} 1',
                 'dpserve_worker_in_flight{worker="w0"} 3', 'dpserve_worker_healthy{worker="w0"} 1',
                 'dpserve_worker_circuit_state{worker="w0"} 0', "dpserve_cache_tree_chars 42.0",
                 "# TYPE dpserve_request_duration_seconds histogram",
                 "# TYPE dpserve_time_to_first_token_seconds histogram"):
        assert line in text.splitlines(), line
