"""The in-process gateway of `dpserve serve`: the router's app, built from the serve config."""

from __future__ import annotations

from dpserve.launcher.config import ServeConfig
from dpserve.launcher.service import GatewaySite


def build_gateway_site(config: ServeConfig) -> GatewaySite:
    """The gateway app (no workers yet: replicas join as they become healthy) and where it listens."""
    from dpserve.gateway.app import build_app

    gw = config.gateway
    return GatewaySite(build_app(gw), gw.host, gw.port, drain_s=gw.shutdown_grace_s, admin_key=gw.admin_key)
