"""Fakes for gateway unit tests: a settable clock and a policy candidate with a fixed load."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeWorker:
    """Satisfies policies.base.Candidate."""

    id: str
    weight: float = 1.0
    in_flight: int = 0
    polled_load: float = 0.0

    def load(self) -> float:
        return self.polled_load + self.in_flight
