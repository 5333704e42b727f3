"""Replica ports that cannot collide, even between two `dpserve serve` on one host.

Each port comes from the OS (bind to port 0, so it is free right now) and stays reserved for the
life of this process in two ways:
- the reservation socket stays bound (SO_REUSEADDR, never listening): the OS does not hand the
  port to anyone else's bind(0), yet the replica — which also sets SO_REUSEADDR, as asyncio,
  uvicorn and `socket.create_server` do — can still bind and listen on it;
- an fcntl lock on `<lock dir>/<port>.lock`: another PortAllocator (another `dpserve serve`) that
  is offered the same port skips it, which closes the window when a replica restarts.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from pathlib import Path

_MAX_ATTEMPTS = 64


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / "dpserve-ports"


class PortAllocator:
    """Reserves ports on `host`; `release_all()` (or process exit) gives them back."""

    def __init__(self, host: str, lock_dir: Path | None = None) -> None:
        self._host = host
        self._lock_dir = lock_dir or default_lock_dir()
        self._held: dict[int, tuple[socket.socket, int]] = {}  # port → (socket, lock fd)

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(self._held)

    def reserve(self) -> int:
        """A port no other PortAllocator on this host holds and nothing else is bound to."""
        self._lock_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(_MAX_ATTEMPTS):
            sock = self._bind_any()
            port = int(sock.getsockname()[1])
            lock_fd = self._try_lock(port)
            if lock_fd is None:
                sock.close()  # another dpserve holds it; ask the OS again
                continue
            self._held[port] = (sock, lock_fd)
            return port
        raise OSError(f"could not reserve a free port on {self._host} after {_MAX_ATTEMPTS} tries")

    def release(self, port: int) -> None:
        sock, lock_fd = self._held.pop(port)
        sock.close()
        os.close(lock_fd)  # closing the last fd drops the flock

    def release_all(self) -> None:
        for port in list(self._held):
            self.release(port)

    def _bind_any(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.set_inheritable(False)
        sock.bind((self._host, 0))
        return sock

    def _try_lock(self, port: int) -> int | None:
        path = self._lock_dir / f"{port}.lock"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd
