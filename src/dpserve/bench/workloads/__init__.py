"""Workload registry: name → module with `build(config, text, rng) -> list[Conversation]`.

Implementations are imported only when chosen; CLI choices come from WORKLOAD_NAMES.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dpserve.bench.workloads.base import Workload

_MODULES = {
    "random": "dpserve.bench.workloads.random_text",
    "shared-prefix": "dpserve.bench.workloads.shared_prefix",
    "multi-turn": "dpserve.bench.workloads.multi_turn",
    "sharegpt": "dpserve.bench.workloads.sharegpt",
}
WORKLOAD_NAMES = tuple(_MODULES)


def get_workload(name: str) -> Workload:
    """The workload module registered as `name`; KeyError lists the valid names."""
    if name not in _MODULES:
        raise KeyError(f"unknown workload {name!r}; valid: {', '.join(WORKLOAD_NAMES)}")
    module: Workload = importlib.import_module(_MODULES[name])
    return module
