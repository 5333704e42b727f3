"""Fakes for admission unit tests: a settable clock and a scripted capacity view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dpserve.gateway.admission import WorkerLoad
from tests.unit.gateway.fakes import FakeClock

__all__ = ["FakeCapacity", "FakeClock"]


@dataclass
class FakeCapacity:
    """Workers with an in-flight cap; tests move `in_flight` by hand like the gateway would."""

    cap: int = 1
    loads: list[WorkerLoad] = field(default_factory=lambda: [WorkerLoad("w0", True)])
    in_flight: int = 0

    def has_capacity(self) -> bool:
        healthy = sum(1 for w in self.loads if w.healthy)
        return self.in_flight < healthy * self.cap

    def load_snapshot(self) -> Sequence[WorkerLoad]:
        return self.loads
