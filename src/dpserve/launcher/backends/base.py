"""The backend contract: how to start one replica of a given engine from a ReplicaSpec."""

from __future__ import annotations

import shlex
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dpserve.http_names import HEALTH_PATH, METRICS_PATH
from dpserve.launcher.placement import Placement

if TYPE_CHECKING:
    from dpserve.gateway.kv_events.endpoint import KvEventsEndpoint

# What the gateway polls on every replica (health probes, load polls): backends that can keep
# these out of their access logs do, so replica logs are about the replicas' work.
GATEWAY_POLL_PATHS = (HEALTH_PATH, METRICS_PATH)
_MASK = "***"


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a backend needs to build one replica's command line."""

    replica_id: str
    model: str  # what --model said: a bundled name, a local directory or a hub id
    model_path: str  # what the engine should load (bundled names resolved to their directory)
    host: str
    port: int
    tp_size: int
    placement: Placement
    pp_size: int = 1
    on_ray: bool = False  # runs as the child of a Ray actor (`dpserve serve --ray`)
    engine_args: tuple[str, ...] = ()  # extra engine flags, already shlex-split
    python: str = field(default=sys.executable)
    kv_events: KvEventsEndpoint | None = None  # where it publishes KV events (its --kv-events-config)
    api_key: str | None = field(default=None, repr=False)  # the key it asks of clients (--replica-api-key)
    max_request_bytes: int | None = None  # largest body it takes (the gateway's --max-request-bytes)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def shown(self, argv: Sequence[str]) -> str:
        """The command line for logs and messages, the API key masked (log files are not secret)."""
        return shlex.join(_MASK if self.api_key is not None and arg == self.api_key else arg for arg in argv)


class Backend(ABC):
    """One engine kind. Subclasses are stateless; the registry makes one per name."""

    name: str = ""
    #: False for engines that need no device (the simulator): they are never placed on GPUs.
    uses_devices: bool = True
    #: Largest --tp-size the backend can run (None = no limit of ours).
    max_tp_size: int | None = None
    #: Largest --pp-size the backend can run (None = no limit of ours).
    max_pp_size: int | None = None
    #: Path that answers 200 once the replica can serve.
    health_path: str = HEALTH_PATH
    #: True when bundled model names must be resolved to a directory before the engine sees them.
    needs_model_path: bool = False
    #: True when the model must be a bundled name or a local HF directory (our own engine): the
    #: launcher resolves it once up front, so a bad --model fails at once instead of in N replicas.
    resolves_model_locally: bool = False
    #: Python package the replica runs from (checked before launching), None for our own commands.
    requires_module: str | None = None
    #: True when the engine takes vLLM's --kv-events-config (serve then turns KV events on).
    publishes_kv_events: bool = False
    #: The engine's flag that makes it require `Authorization: Bearer KEY` (None: it has none).
    api_key_flag: str | None = None
    #: The engine's flag for its largest request body (None: it has none of ours).
    max_request_bytes_flag: str | None = None

    def kv_events_tokenizer(self, model: str, model_path: str) -> str:
        """What the gateway loads to compute a request's KV block keys as this engine does."""
        return model_path

    @abstractmethod
    def command(self, spec: ReplicaSpec) -> list[str]:
        """argv that runs the replica in the foreground, listening on spec.host:spec.port, asking
        clients for spec.api_key (`api_key_args`); spec.engine_args come last so they can override
        what we set."""

    def api_key_args(self, spec: ReplicaSpec) -> list[str]:
        """`--api-key KEY` (the engine's flag) when the replica has a key and the engine takes one."""
        if spec.api_key is None or self.api_key_flag is None:
            return []
        return [self.api_key_flag, spec.api_key]

    def request_limit_args(self, spec: ReplicaSpec) -> list[str]:
        """`--max-request-bytes N` when the plan sets it and the engine takes it, so a body the
        gateway lets through is not refused by the replica behind it."""
        if spec.max_request_bytes is None or self.max_request_bytes_flag is None:
            return []
        return [self.max_request_bytes_flag, str(spec.max_request_bytes)]

    def env(self, spec: ReplicaSpec) -> dict[str, str]:
        """Environment added to ours for this replica: by default the placement's."""
        return spec.placement.env()
