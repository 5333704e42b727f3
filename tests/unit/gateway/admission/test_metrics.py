from dpserve.gateway.admission import AdmissionConfig, build_admission
from dpserve.gateway.admission.metrics import AdmissionMetrics, Gauges

from .fakes import FakeCapacity


def test_render_has_help_type_and_escaped_labels() -> None:
    metrics = AdmissionMetrics()
    metrics.rejected[("queue_full", 'we"ird')] += 2
    text = metrics.render(Gauges(queue_depth=3, drain_rate_per_s=1.5, estimated_wait_s=None,
                                 backend="memory", backend_up=True))
    assert "# TYPE dpserve_admission_rejected_total counter" in text
    assert 'dpserve_admission_rejected_total{reason="queue_full",tenant="we\\"ird"} 2' in text
    assert "dpserve_admission_queue_depth 3" in text
    assert "dpserve_admission_drain_rate 1.5" in text
    assert "estimated_wait" not in text
    assert all(line.startswith(("#", "dpserve_")) for line in text.splitlines())


def test_worker_room_follows_weighted_cap() -> None:
    adm = build_admission(AdmissionConfig(max_inflight_per_worker=4), FakeCapacity())
    assert adm.worker_cap(2.0) == 8
    assert adm.worker_has_room(7, 2.0) and not adm.worker_has_room(8, 2.0)
    assert build_admission(AdmissionConfig(), FakeCapacity()).worker_has_room(10**6)
