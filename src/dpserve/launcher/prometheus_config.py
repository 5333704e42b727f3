"""`serve --write-prometheus-config PATH`: Prometheus scrape config for the gateway and the replicas launched.

Replica ports are reserved per run (collision-free, not fixed), so a static file cannot list them;
the launcher knows them and they stay the same across restarts, so one write at start is enough.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

GATEWAY_JOB = "dpserve-gateway"
REPLICAS_JOB = "dpserve-replicas"
SCRAPE_INTERVAL = "5s"
_HEADER = ("# Written by `dpserve serve --write-prometheus-config` for this run's gateway and replicas.\n"
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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
