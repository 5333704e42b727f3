"""Incremental Server-Sent Events parsing: bytes in, complete `data:` payloads out."""

from __future__ import annotations

DONE = "[DONE]"


class SSEParser:
    """Feed raw bytes as they arrive; get the data of every event completed by them.

    Handles events split across network chunks, several events in one chunk, CRLF or LF line ends,
    multi-line data (joined with newlines, per the SSE spec) and comment lines.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        events: list[str] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                return events
            line = self._buffer[:newline].rstrip(b"\r").decode("utf-8", errors="replace")
            self._buffer = self._buffer[newline + 1:]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def close(self) -> list[str]:
        """Flush a final event the stream ended without a blank line for."""
        events = self.feed(b"\n") if self._buffer else []
        if self._data:
            events.append("\n".join(self._data))
            self._data = []
        return events

    def _line(self, line: str) -> str | None:
        if not line:
            if not self._data:
                return None
            event, self._data = "\n".join(self._data), []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None
