"""least_load: the worker with the least weighted load (waiting above running), then in-flight."""

from __future__ import annotations

from collections.abc import Sequence

from dpserve.gateway.policies.base import Candidate, Choice, Policy, RouteRequest, least_loaded


class LeastLoadPolicy(Policy):
    name = "least_load"

    def select(self, candidates: Sequence[Candidate], request: RouteRequest) -> Choice:
        return Choice(least_loaded(candidates, self.rng), "least_load")
