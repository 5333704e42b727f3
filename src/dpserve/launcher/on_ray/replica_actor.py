"""ReplicaActor: the Ray actor that runs one replica process on the node Ray placed it on.

It does on its node what `dpserve serve` does on its own host, with the same pieces: a port
reserved by `PortAllocator`, the process spawned by `process.spawn` (own group, signalled when
the actor dies), a `Watchdog` that kills the group if the actor is killed, and the output read
line by line; the driver fetches those lines (`read_output`) into the replica's log. The command
itself is built by the driver from the backend, so it is the same as a local replica's.

Plain Python (no Ray import): the driver wraps it with `ray.remote` and the node imports it, so
dpserve must be installed on every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import deque
from typing import Any

from dpserve.aio import wait_for
from dpserve.config import ANY_HOST
from dpserve.launcher.logs import pump_lines
from dpserve.launcher.port_owner import group_listens_on
from dpserve.launcher.ports import PortAllocator
from dpserve.launcher.process import spawn, stop_group
from dpserve.launcher.watchdog import Watchdog

_MAX_BUFFERED_LINES = 10_000  # output the driver has not fetched yet; the oldest go first


class ReplicaActor:
    """One replica's process on this node. Methods are async: Ray runs them on one event loop."""

    def __init__(self, watchdog_grace_s: float) -> None:
        self._watchdog = Watchdog(grace_s=watchdog_grace_s)
        self._ports: list[PortAllocator] = []  # on this node's address, and on every interface
        self._port: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._lines: deque[bytes] = deque(maxlen=_MAX_BUFFERED_LINES)
        self._has_lines = asyncio.Event()

    async def where(self, kv_events: bool = False) -> dict[str, Any]:
        """This node and what Ray gave us: node id and address, GPU ids, a free port, our Python;
        with kv_events, `kv_events_ports` [PUB, replay]: the PUB socket binds every interface
        (`tcp://*:P`, vLLM's only bound tcp form), so its port is reserved on all of them."""
        import ray

        context = ray.get_runtime_context()
        ip = ray.util.get_node_ip_address()
        here = PortAllocator(ip)
        self._ports = [here]
        self._port = here.reserve()  # held (SO_REUSEADDR) until stop(): nobody else's bind(0) gets it
        kv_ports = None
        if kv_events:
            everywhere = PortAllocator(ANY_HOST)
            self._ports.append(everywhere)
            kv_ports = [everywhere.reserve(), here.reserve()]
        return {"node_id": context.get_node_id(), "ip": ip, "port": self._port, "kv_events_ports": kv_ports,
                "gpu_ids": list(context.get_accelerator_ids().get("GPU", [])), "python": sys.executable}

    async def start(self, argv: list[str], env: dict[str, str]) -> int:
        """Spawn the replica; its pid on this node."""
        await self._watchdog.start()
        proc = await spawn(argv, {**os.environ, **env})
        self._proc = proc
        self._watchdog.track(proc.pid)
        assert proc.stdout is not None
        self._pump = asyncio.create_task(pump_lines(proc.stdout, self._append))
        self._pump.add_done_callback(lambda _: self._has_lines.set())  # EOF wakes a waiting reader
        return proc.pid

    def _append(self, line: bytes) -> None:
        self._lines.append(line)
        self._has_lines.set()

    async def read_output(self, wait_s: float) -> tuple[list[bytes], bool]:
        """The lines printed since the last call (waiting up to wait_s for one), and whether the
        output has ended."""
        if not self._lines and not self._output_ended():
            with contextlib.suppress(TimeoutError):
                await wait_for(self._has_lines.wait(), timeout=wait_s)
        lines = list(self._lines)
        self._lines.clear()
        self._has_lines.clear()
        return lines, self._output_ended() and not self._lines

    def _output_ended(self) -> bool:
        return self._pump is not None and self._pump.done()

    async def wait_exit(self) -> int:
        """Return the replica's exit status once it has exited."""
        assert self._proc is not None, "start() first"
        return await self._proc.wait()

    async def serves_its_port(self) -> bool | None:
        if self._proc is None or self._port is None:
            return None
        return group_listens_on(self._proc.pid, self._port)

    async def stop(self, grace_s: float) -> int | None:
        """SIGTERM the replica's group, SIGKILL after grace_s; release the port and the watchdog."""
        code = None
        if self._proc is not None:
            code = await stop_group(self._proc, grace_s)
            self._watchdog.untrack(self._proc.pid)
            if self._pump is not None:
                try:
                    await wait_for(asyncio.shield(self._pump), timeout=5.0)
                except TimeoutError:
                    self._pump.cancel()
        await self._watchdog.stop()
        for ports in self._ports:
            ports.release_all()
        return code
