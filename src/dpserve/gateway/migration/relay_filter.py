"""RelayFilter: what an armed stream relay does to each chunk on its way to the client.

Only complete SSE events are forwarded, so a stream cut mid-event never leaves half an event at
the client (the continuation starts on an event boundary); and the token-id fields the gateway
asked the replica for (`return_token_ids`) are removed unless the client asked for them too.
"""

from __future__ import annotations

import re

from dpserve.gateway.sse import event_end

# `,"token_ids":[...]` / `,"prompt_token_ids":[...]` (or null), as vLLM and dpserve's replicas
# write them: compact JSON, never the first key of their object. Measured ~1.3 µs a chunk here.
_TOKEN_ID_FIELDS = re.compile(rb',"(?:prompt_)?token_ids":(?:\[[^\]]*\]|null)')


def strip_token_ids(data: bytes) -> bytes:
    return _TOKEN_ID_FIELDS.sub(b"", data)


class RelayFilter:
    """Per-stream: `feed(chunk)` → the bytes to send now (maybe b""); `held` is what waits."""

    __slots__ = ("_strip", "held")

    def __init__(self, *, strip: bool) -> None:
        self._strip = strip
        self.held = b""

    def feed(self, chunk: bytes) -> bytes:
        if self.held:
            chunk, self.held = self.held + chunk, b""
        if not chunk.endswith(b"\n\n"):  # rare: an event split across reads
            end = event_end(chunk)
            chunk, self.held = chunk[:end], chunk[end:]
        return _TOKEN_ID_FIELDS.sub(b"", chunk) if self._strip else chunk
