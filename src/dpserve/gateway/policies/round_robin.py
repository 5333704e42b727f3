"""round_robin: candidates in turn, ignoring load and weight."""

from __future__ import annotations

from collections.abc import Sequence

from dpserve.gateway.policies.base import Candidate, Choice, Policy, RouteRequest


class RoundRobinPolicy(Policy):
    name = "round_robin"
    _next = 0

    def select(self, candidates: Sequence[Candidate], request: RouteRequest) -> Choice:
        # Index into the sorted ids so the order does not depend on which workers are routable.
        ordered = sorted(candidates, key=lambda w: w.id)
        worker = ordered[self._next % len(ordered)]
        self._next += 1
        return Choice(worker, "round_robin")
