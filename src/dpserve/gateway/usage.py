"""Token usage seen in a relayed response (JSON body, a stream's usage event or text events), for quotas."""

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


_TEXT_MARKS = (b'"content":"', b'"text":"')
_EMPTY_MARKS = (b'"content":""', b'"text":""')
_WINDOW = 16  # longer than every marker


def _markers(data: bytes) -> int:
    return sum(data.count(m) for m in _TEXT_MARKS) - sum(data.count(m) for m in _EMPTY_MARKS)


def content_events(chunk: bytes) -> int:
    """SSE events in `chunk` that carry generated text (chat `content`, completions `text`).

    Two C-level counts per chunk; the empty-text events (chat's role chunk, a bare finish chunk)
    are subtracted only when the chunk has one. vLLM and our replicas write JSON without spaces.
    """
    n = chunk.count(b'"content":"') + chunk.count(b'"text":"')
    if n and b'":""' in chunk:
        n -= chunk.count(b'"content":""') + chunk.count(b'"text":""')
    return n


class StreamTail:
    """The last few chunks of an SSE stream, and how many text-carrying events went by.

    `usage_into` takes the stream's own usage event when there is one (the client asked for
    `stream_options.include_usage`); otherwise it counts one completion token per text event, so a
    stream is charged to its tenant whether or not the client asked for usage. That count is a
    lower bound when a replica merges tokens into one event (held-back stop-string text).
    """

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque(maxlen=_TAIL_CHUNKS)
        self.text_events = 0

    def add(self, chunk: bytes) -> None:
        if self._chunks and not self._chunks[-1].endswith(b"\n\n"):
            # The previous chunk ended mid-event (rare: events usually arrive whole): count the
            # markers that straddle the cut, from a window of both sides.
            prev, head = self._chunks[-1][-_WINDOW:], chunk[:_WINDOW]
            self.text_events += _markers(prev + head) - _markers(prev) - _markers(head)
        self._chunks.append(chunk)
        self.text_events += content_events(chunk)

    def ends_at_event_boundary(self) -> bool:
        return not self._chunks or self._chunks[-1].endswith(b"\n\n")

    def usage_into(self, usage: Usage) -> None:
        if not self._usage_event_into(usage):
            usage.completion_tokens = self.text_events

    def _usage_event_into(self, usage: Usage) -> bool:
        tail = b"".join(self._chunks)
        if b'"usage"' not in tail:
            return False
        for event in reversed(tail.split(b"\n\n")):
            event = event.strip()
            if event.startswith(b"data: {") and b'"usage"' in event:
                try:
                    parsed = orjson.loads(event[6:])
                except orjson.JSONDecodeError:
                    continue
                if isinstance(parsed, dict) and parsed.get("usage"):
                    usage.take(parsed["usage"])
                    return True
        return False
