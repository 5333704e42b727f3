"""Where a replica runs: the contract between the supervisor and a runtime (this host, or Ray).

The supervisor owns *when* (start, health, restart policy, gateway hooks); a runtime owns *where
and how*: it turns a planned `ReplicaSpec` into a running instance, whose output reaches the
replica's `ReplicaLog`, and which it can watch and stop. Local processes (`local_runtime`) and
Ray actors (`on_ray.runtime`) implement it, so both are supervised by the same code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from dpserve.launcher.backends import Backend, ReplicaSpec
from dpserve.launcher.logs import ReplicaLog


class StartError(RuntimeError):
    """The instance could not be started (spawn failed, no room in the cluster); the message says why."""


class RunningReplica(ABC):
    """One started instance of a replica. After `stop()` (or its end) nothing of it keeps running."""

    #: The spec it was started from, with its real host, port and devices.
    spec: ReplicaSpec
    #: The command line and the environment added to it, for the replica's log.
    argv: list[str]
    env: dict[str, str]
    #: The replica's main process id (on its node, for a remote replica).
    pid: int | None = None

    @property
    def url(self) -> str:
        return self.spec.url

    @abstractmethod
    def describe(self) -> str:
        """Where it runs, for logs: "pid 123", or "pid 123 on node ab12cd34 (10.0.0.7)"."""

    @property
    @abstractmethod
    def ended(self) -> bool:
        """True once the replica's process (or the host it ran on) is gone."""

    @abstractmethod
    def outcome(self) -> str:
        """How it ended, for logs ("code 1", "signal 9", "its Ray actor died: ..."); "" while running."""

    @abstractmethod
    async def wait(self) -> None:
        """Return once `ended` is true."""

    @abstractmethod
    async def serves_its_port(self) -> bool | None:
        """Whether the socket listening on its port belongs to it (None: cannot tell)."""

    @abstractmethod
    async def stop(self, grace_s: float) -> None:
        """SIGTERM, `grace_s`, SIGKILL; release whatever was taken for it. Safe to call twice."""


class ReplicaRuntime(ABC):
    """Starts instances; `open()` before the first start, `close()` after the last stop."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @abstractmethod
    async def start(self, spec: ReplicaSpec, backend: Backend, log: ReplicaLog) -> RunningReplica:
        """Start one instance of `spec` with `backend`'s command; raises StartError."""
