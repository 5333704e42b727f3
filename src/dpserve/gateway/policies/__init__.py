"""Routing policy registry: name → implementation, imported lazily; CLI choices come from here.

Adding a policy = one file with a `Policy` subclass + one line in `_IMPLEMENTATIONS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from random import Random  # not `import random`: importing policies/random.py rebinds that name
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dpserve.gateway.policies.base import Policy
    from dpserve.gateway.policies.config import PolicyConfig

_IMPLEMENTATIONS: dict[str, str] = {
    "cache_aware": "dpserve.gateway.policies.cache_aware:CacheAwarePolicy",
    "consistent_hash": "dpserve.gateway.policies.consistent_hash:ConsistentHashPolicy",
    "least_load": "dpserve.gateway.policies.least_load:LeastLoadPolicy",
    "power_of_two": "dpserve.gateway.policies.power_of_two:PowerOfTwoPolicy",
    "precise_prefix": "dpserve.gateway.policies.precise_prefix:PrecisePrefixPolicy",
    "random": "dpserve.gateway.policies.random:RandomPolicy",
    "round_robin": "dpserve.gateway.policies.round_robin:RoundRobinPolicy",
}
POLICY_NAMES: tuple[str, ...] = tuple(_IMPLEMENTATIONS)
DEFAULT_POLICY = "cache_aware"


def policy_class(name: str) -> type[Policy]:
    """The class registered under `name` (imported now); KeyError lists the valid names."""
    if name not in _IMPLEMENTATIONS:
        raise KeyError(f"unknown policy {name!r}; valid: {', '.join(POLICY_NAMES)}")
    module_name, class_name = _IMPLEMENTATIONS[name].split(":")
    cls: type[Policy] = getattr(importlib.import_module(module_name), class_name)
    return cls


def build_policy(config: PolicyConfig, *, rng: Random | None = None,
                 clock: Callable[[], float] | None = None) -> Policy:
    """The configured policy with its random generator (seeded from --seed) and clock injected."""
    import time

    rng = rng if rng is not None else Random(config.seed)
    return policy_class(config.policy)(config, rng, clock or time.monotonic)
