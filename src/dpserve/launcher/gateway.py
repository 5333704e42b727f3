"""The in-process gateway of `dpserve serve`: the router's app, built from the serve config."""

from __future__ import annotations

import dataclasses
import secrets

from dpserve.launcher.backends import get_backend
from dpserve.launcher.config import ServeConfig
from dpserve.launcher.kv_events import wants_kv_events
from dpserve.launcher.plan import resolve_model_path
from dpserve.launcher.service import GatewaySite


def build_gateway_site(config: ServeConfig) -> GatewaySite:
    """The gateway app (no workers yet: replicas join as they become healthy) and where it listens.

    The launcher joins replicas with POST/DELETE /workers; it uses --admin-key when given, else a
    random key of its own that only this process knows, so serve works whatever the access rules
    (gateway/access.py) allow others."""
    from dpserve.gateway.app import build_app

    gw = config.gateway
    launch = config.launch
    backend = get_backend(launch.backend)
    if gw.routing.kv_events_tokenizer is None and wants_kv_events(launch, backend):
        tokenizer = backend.kv_events_tokenizer(launch.model, resolve_model_path(launch.model, backend))
        gw = dataclasses.replace(gw, routing=dataclasses.replace(gw.routing, kv_events_tokenizer=tokenizer))
    link_key = gw.admin_key or secrets.token_urlsafe(32)
    return GatewaySite(build_app(gw, link_key=link_key), gw.host, gw.port, drain_s=gw.shutdown_grace_s,
                       admin_key=link_key)
