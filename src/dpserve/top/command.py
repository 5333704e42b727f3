"""`dpserve top`: live per-replica table of a gateway in the terminal (light to import)."""

from __future__ import annotations

from dpserve.config import CommonOptions
from dpserve.top.config import TopConfig

CONFIG_CLASS = TopConfig


def run(config: TopConfig, common: CommonOptions) -> int:
    from dpserve.top.screen import run_top

    return run_top(config)
