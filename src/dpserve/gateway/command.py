"""`dpserve router`: the gateway alone, in front of --worker-urls (light to import)."""

from __future__ import annotations

from dpserve.config import CommonOptions
from dpserve.gateway.config import GatewayConfig

CONFIG_CLASS = GatewayConfig


def run(config: GatewayConfig, common: CommonOptions) -> int:
    from dpserve.gateway.app import build_app
    from dpserve.http_server import run_app

    run_app(build_app(config), config.host, config.port, shutdown_grace_s=config.shutdown_grace_s)
    return 0
