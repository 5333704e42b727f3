"""Blocking entry of `dpserve serve`: plan, reserve ports, build the gateway, run the service."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

from dpserve.config import ConfigError
from dpserve.http_server import bind_socket, run_on_uvloop
from dpserve.launcher.backends import Backend, get_backend
from dpserve.launcher.config import ServeConfig
from dpserve.launcher.gateway import build_gateway_site
from dpserve.launcher.kv_events import wants_kv_events
from dpserve.launcher.plan import build_plan
from dpserve.launcher.ports import PortAllocator, default_lock_dir
from dpserve.launcher.service import ServeService

logger = logging.getLogger(__name__)


def default_log_dir() -> Path:
    from dpserve.model_store.resolver import cache_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return cache_dir() / "logs" / f"serve-{stamp}-{os.getpid()}"


def check_gateway_port(host: str, port: int) -> None:
    """Fail early, before any replica starts, when the gateway's address is taken."""
    if port == 0:
        return
    try:
        bind_socket(host, port).close()
    except OSError as exc:
        raise ConfigError(f"the gateway cannot listen on {host}:{port}: {exc.strerror} "
                          f"(choose another --port)") from exc


def check_backend_installed(backend: Backend) -> None:
    """A missing engine package would only show up as N replicas crashing and being restarted."""
    module = backend.requires_module
    if module is not None and importlib.util.find_spec(module) is None:
        raise ConfigError(f"the {backend.name} backend needs the {module!r} package in this Python "
                          f"({sys.executable}); install it (pip install {module}) "
                          f"or choose another --backend")


def serve(config: ServeConfig) -> int:
    launch = config.launch
    check_gateway_port(config.gateway.host, config.gateway.port)
    if launch.ray:
        return serve_on_ray(config)
    ports = PortAllocator(launch.replica_host)
    try:
        replica_ports = [ports.reserve() for _ in range(launch.dp_size)]
        kv_ports = ([ports.reserve() for _ in range(launch.dp_size)]
                    if wants_kv_events(launch, get_backend(launch.backend)) else None)
        plan = build_plan(launch, replica_ports, kv_event_ports=kv_ports, socket_dir=default_lock_dir())
        plan = plan.with_api_key(config.gateway.replica_api_key).with_max_request_bytes(
            config.gateway.limits.max_request_bytes)
        check_backend_installed(plan.backend)
        log_dir = launch.log_dir or default_log_dir()
        logger.info("replica logs in %s", log_dir)
        service = ServeService(launch, plan, build_gateway_site(config), log_dir)
        return run_on_uvloop(service.run())
    finally:
        ports.release_all()


def serve_on_ray(config: ServeConfig) -> int:
    """The same service, its replicas placed on a Ray cluster (joined and left here)."""
    from dpserve.launcher.on_ray.session import RaySession

    launch = config.launch
    session = RaySession.open(launch, kv_events=wants_kv_events(launch, get_backend(launch.backend)))
    try:
        log_dir = launch.log_dir or default_log_dir()
        logger.info("replica logs in %s", log_dir)
        plan = session.plan.with_api_key(config.gateway.replica_api_key).with_max_request_bytes(
            config.gateway.limits.max_request_bytes)
        service = ServeService(launch, plan, build_gateway_site(config), log_dir, session.runtime)
        return run_on_uvloop(service.run())
    finally:
        session.close()
