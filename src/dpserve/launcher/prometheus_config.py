"""`serve --write-prometheus-config PATH`: Prometheus scrape config for the gateway and the replicas launched.

Replica ports are reserved per run (collision-free, not fixed), so a static file cannot list them;
the launcher knows them. Locally they are known at start and kept across restarts; with --ray a
replica's node and port are known only once Ray has placed it, and a restart may place it on
another node, so the file is written again (atomically) whenever a replica's address changes.
Prometheus reads a changed file on SIGHUP, on `POST /-/reload` (--web.enable-lifecycle), or by
itself with --enable-feature=auto-reload-config.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

GATEWAY_JOB = "dpserve-gateway"
REPLICAS_JOB = "dpserve-replicas"
SCRAPE_INTERVAL = "5s"
_HEADER = ("# Written by `dpserve serve --write-prometheus-config` for this run's gateway and replicas,\n"
           "# again when a replica comes back at another address (--ray): Prometheus reads the new\n"
           "# file on SIGHUP, POST /-/reload, or by itself with --enable-feature=auto-reload-config.\n"
           "# The Grafana dashboard deploy/grafana/dpserve.json reads these series.\n")


def scrape_config(gateway: str, replicas: Sequence[tuple[str, str]], admin_key: str | None) -> str:
    """YAML for Prometheus: `gateway` and each (replica name, host:port) as targets (one label each)."""
    gateway_job: dict[str, Any] = {"job_name": GATEWAY_JOB, "static_configs": [{"targets": [gateway]}]}
    if admin_key is not None:  # the gateway's /metrics needs the admin key when one is set
        gateway_job["authorization"] = {"type": "Bearer", "credentials": admin_key}
    replica_job = {"job_name": REPLICAS_JOB, "static_configs": [
        {"targets": [target], "labels": {"replica": name}} for name, target in replicas]}
    doc = {"global": {"scrape_interval": SCRAPE_INTERVAL}, "scrape_configs": [gateway_job, replica_job]}
    return _HEADER + yaml.safe_dump(doc, sort_keys=False)


def write_scrape_config(path: Path, text: str, secret: bool) -> None:
    """Atomically (a reader never sees half a file); 0600 when it holds the admin key."""
    tmp = path.with_name(path.name + ".tmp")
    mode = 0o600 if secret else 0o644
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # a .tmp left by an earlier run keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class ScrapeConfigFile:
    """This run's file: the gateway and each replica whose address is known, in plan order;
    `set_replica` writes it again when a replica's address changes."""

    def __init__(self, path: Path, gateway: str, replicas: Sequence[tuple[str, str | None]],
                 admin_key: str | None) -> None:
        """replicas: (name, host:port, or None while it is not placed yet)."""
        self.path = path
        self._gateway = gateway
        self._targets: dict[str, str | None] = dict(replicas)
        self._admin_key = admin_key

    def set_replica(self, name: str, target: str) -> None:
        if self._targets.get(name) == target:
            return
        self._targets[name] = target
        self.write()

    def write(self) -> None:
        """Write the file (an error is logged: serving goes on without it)."""
        known = [(name, target) for name, target in self._targets.items() if target is not None]
        text = scrape_config(self._gateway, known, self._admin_key)
        try:
            write_scrape_config(self.path, text, secret=self._admin_key is not None)
        except OSError as exc:
            logger.error("could not write the Prometheus config %s: %s", self.path, exc)
        else:
            logger.info("Prometheus scrape config for this run written to %s (%d of %d replicas)",
                        self.path, len(known), len(self._targets))
