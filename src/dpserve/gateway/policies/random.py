"""random: a worker drawn at random, with probability proportional to its weight."""

from __future__ import annotations

from collections.abc import Sequence

from dpserve.gateway.policies.base import Candidate, Choice, Policy, RouteRequest


class RandomPolicy(Policy):
    name = "random"

    def select(self, candidates: Sequence[Candidate], request: RouteRequest) -> Choice:
        worker = self.rng.choices(list(candidates), weights=[w.weight for w in candidates])[0]
        return Choice(worker, "random")
