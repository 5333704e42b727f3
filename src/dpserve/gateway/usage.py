"""Token usage seen in a relayed response (JSON body or a stream's final usage chunk), for quotas."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

# Stream chunks kept to find the usage event: it comes last, before [DONE].
_TAIL_CHUNKS = 3


@dataclass
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def take(self, usage: Any) -> None:
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            self.prompt_tokens = prompt if isinstance(prompt, int) else None
            self.completion_tokens = completion if isinstance(completion, int) else None

    def from_body(self, body: bytes) -> None:
        if b'"usage"' not in body:  # skip the parse when there is nothing to find
            return
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(parsed, dict):
            self.take(parsed.get("usage"))


class StreamTail:
    """The last few chunks of an SSE stream; `usage_into` parses only the event that has usage."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque(maxlen=_TAIL_CHUNKS)

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def ends_at_event_boundary(self) -> bool:
        return not self._chunks or self._chunks[-1].endswith(b"\n\n")

    def usage_into(self, usage: Usage) -> None:
        tail = b"".join(self._chunks)
        if b'"usage"' not in tail:
            return
        for event in reversed(tail.split(b"\n\n")):
            event = event.strip()
            if event.startswith(b"data: {") and b'"usage"' in event:
                try:
                    parsed = orjson.loads(event[6:])
                except orjson.JSONDecodeError:
                    continue
                if isinstance(parsed, dict) and parsed.get("usage"):
                    usage.take(parsed["usage"])
                    return
