"""power_of_two: two distinct random workers, the less loaded (by weighted load) wins."""

from __future__ import annotations

from collections.abc import Sequence

from dpserve.gateway.policies.base import Candidate, Choice, Policy, RouteRequest, least_loaded


class PowerOfTwoPolicy(Policy):
    name = "power_of_two"

    def select(self, candidates: Sequence[Candidate], request: RouteRequest) -> Choice:
        if len(candidates) == 1:
            return Choice(candidates[0], "power_of_two")
        pair = self.rng.sample(list(candidates), 2)
        return Choice(least_loaded(pair, self.rng), "power_of_two")
