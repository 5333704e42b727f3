"""StreamRecord: the raw bytes of one relayed stream, parsed only when they are needed.

The hot path only appends (a list append and an add, ~0.1 µs a chunk); `settle()` parses the
complete events into the request's `StreamState` when a migration or a whole JSON answer needs
them. Past `cap_bytes` the complete events are folded into the state early, so memory stays at
most `cap_bytes` of raw bytes plus the state itself (the text and ids the client already has).
"""

from __future__ import annotations

from typing import Any

import orjson

from dpserve.gateway.migration.stream_state import Piece, StreamState, parse_piece, piece_of
from dpserve.gateway.sse import DONE_EVENT, event_end, event_payloads

CAP_BYTES = 256 * 1024
_DATA, _NEXT_DATA = b"data: ", b"\n\ndata: "


class StreamRecord:
    """Chunks of one upstream stream, as relayed; folded into `state` by `settle()`."""

    __slots__ = ("_cap", "_first_stream", "_parts", "_size", "state")

    def __init__(self, state: StreamState, *, first_stream: bool, cap_bytes: int = CAP_BYTES) -> None:
        self.state = state
        self._first_stream = first_stream
        self._cap = cap_bytes
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> None:
        self._parts.append(chunk)
        self._size += len(chunk)
        if self._size > self._cap:
            self.settle()

    def last_chunks(self, n: int) -> list[bytes]:
        """Up to `n` of the latest chunks not folded yet (what a complete stream's usage is read from)."""
        return self._parts[-n:]

    def settle(self) -> None:
        """Fold every complete event into the state; an incomplete last event stays raw (a cut
        stream drops it: the client never received it either)."""
        data = b"".join(self._parts)
        end = event_end(data)
        rest = data[end:]
        self._parts = [rest] if rest else []
        self._size = len(rest)
        events = _as_one_array(data[:end])
        pieces = ((parse_piece(p) for p in event_payloads(data[:end])) if events is None
                  else (Piece(done=True) if e is None else piece_of(e) for e in events))
        for piece in pieces:
            if piece is not None:
                self.state.add(piece, first_stream=self._first_stream)


def _as_one_array(data: bytes) -> list[Any] | None:
    """The usual stream — one compact `data: {...}` line per event, [DONE] last — parsed in one
    orjson call (its events, None for [DONE]): ~2.5x faster than event by event, which a
    non-streaming answer pays on every request. None for anything else (the general parser)."""
    done = data.endswith(DONE_EVENT)
    if done:
        data = data[:-len(DONE_EVENT)]
    if not data:
        return [None] if done else []
    if not data.startswith(_DATA) or b"\r" in data or data.count(b"\n") != 2 * data.count(_NEXT_DATA) + 2:
        return None
    try:
        events = orjson.loads(b"[" + data[6:-2].replace(_NEXT_DATA, b",") + b"]")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(events, list):
        return None
    return [*events, None] if done else events
