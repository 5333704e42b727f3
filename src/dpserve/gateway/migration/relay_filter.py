"""What an armed stream relay does to each chunk on its way to the client.

Only complete SSE events are forwarded (`EventGate`), so a stream cut mid-event never leaves half
an event at the client (the continuation starts on an event boundary); and the token-id fields
the gateway asked the replica for (`return_token_ids`) are removed unless the client asked for
them too (`strip_token_ids`).
"""

from __future__ import annotations

import functools
import re

from dpserve.gateway.sse import event_end

# `,"token_ids":[...]` / `,"prompt_token_ids":[...]` (or null), as vLLM and dpserve's replicas
# write them: compact JSON, never the first key of their object. ~0.5 µs a chunk here; spelled
# out, the alternation is ~30% faster in CPython's re than `,"(?:prompt_)?token_ids"`, and a
# hand-written find-and-slice was no faster.
_TOKEN_ID_FIELDS = re.compile(rb',"(?:prompt_token_ids|token_ids)":(?:\[[^\]]*\]|null)')

# A bound C call (no Python frame per chunk): data -> data without the token-id fields.
strip_token_ids = functools.partial(_TOKEN_ID_FIELDS.sub, b"")


class EventGate:
    """Per stream: `pass_whole(chunk)` → the complete events to send now (maybe b""); the rest
    waits in `held`. Callers skip it for the usual chunk (nothing held, ends on a boundary)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = b""

    def pass_whole(self, chunk: bytes) -> bytes:
        if self.held:
            chunk, self.held = self.held + chunk, b""
        end = event_end(chunk)
        chunk, self.held = chunk[:end], chunk[end:]
        return chunk
