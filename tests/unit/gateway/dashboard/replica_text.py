"""A replica's real /metrics text (dpserve's vLLM-named renderer) with chosen counters, for tests."""

from __future__ import annotations

from dpserve.serving.engine_client import EngineStats
from dpserve.serving.metrics import ReplicaMetrics


class ReplicaText:
    """Mutable counters of one fake replica; `text()` renders them as the replica's /metrics would."""

    def __init__(self) -> None:
        self.metrics = ReplicaMetrics("m")
        self.stats = EngineStats()

    def finish(self, n: int, *, ttft_s: float, tokens: int = 10) -> None:
        for _ in range(n):
            self.metrics.record_first_token(ttft_s)
            self.metrics.record_finished(num_prompt_tokens=5, num_generated_tokens=tokens,
                                         finish_reason="stop", e2e_s=ttft_s * 2)

    def text(self) -> str:
        return self.metrics.render(self.stats)
