"""A replica's output: copied to our stderr with its id as prefix, to its log file, and a tail kept."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


class ReplicaLog:
    """Sink for one replica's combined stdout/stderr across all its restarts."""

    def __init__(self, replica_id: str, path: Path, echo: BinaryIO | None, tail_lines: int = 40) -> None:
        self.path = path
        self._prefix = f"[{replica_id}] ".encode()
        self._echo = echo
        self._tail: deque[bytes] = deque(maxlen=tail_lines)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO | None = path.open("ab")

    def write_line(self, line: bytes) -> None:
        """Never raises: a full disk or a closed stderr must not stop us draining the replica's
        pipe (a replica blocked on a full pipe would hang)."""
        if not line.endswith(b"\n"):
            line += b"\n"
        self._tail.append(line)
        if self._file is not None:
            try:
                self._file.write(line)
                self._file.flush()
            except OSError:
                self._file = None
        if self._echo is not None:
            try:
                self._echo.write(self._prefix + line)
                self._echo.flush()
            except (OSError, ValueError):  # closed or broken stderr: keep the file going
                self._echo = None

    def note(self, message: str) -> None:
        """A line of ours (restart, exit code) in the replica's log, marked as such."""
        self.write_line(f"--- dpserve serve: {message}".encode())

    def tail(self) -> str:
        return b"".join(self._tail).decode(errors="replace")

    async def pump(self, stream: asyncio.StreamReader) -> None:
        """Copy `stream` line by line until EOF."""
        await pump_lines(stream, self.write_line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def pump_lines(stream: asyncio.StreamReader, write_line: Callable[[bytes], None]) -> None:
    """Hand each line of `stream` to `write_line` until EOF (also on the node of a Ray replica)."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line over the reader's limit: take what is buffered
            line = await stream.read(65536)
        if not line:
            return
        write_line(line)
