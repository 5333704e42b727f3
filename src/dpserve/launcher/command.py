"""`dpserve serve`: the replicas and the gateway, co-launched and supervised (light to import)."""

from __future__ import annotations

from dpserve.config import CommonOptions
from dpserve.launcher.config import ServeConfig

CONFIG_CLASS = ServeConfig


def run(config: ServeConfig, common: CommonOptions) -> int:
    from dpserve.launcher.main import serve

    return serve(config)
