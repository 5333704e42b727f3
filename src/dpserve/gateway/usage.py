"""Token usage seen in a relayed response (JSON body, a stream's usage event or text events), for quotas."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

# Stream chunks kept to find the usage event: it comes last, before [DONE].
_TAIL_CHUNKS = 3
# First chunks kept to count text events exactly and to learn their size (StreamTail).
_HEAD_CHUNKS = 8


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


def content_events(data: bytes) -> int:
    """SSE events in `data` that carry generated text (chat `content`, completions `text`); the
    empty-text ones (chat's role chunk, a bare finish chunk) do not count. vLLM and our replicas
    write JSON without spaces."""
    return sum(data.count(m) for m in _TEXT_MARKS) - sum(data.count(m) for m in _EMPTY_MARKS)


class StreamTail:
    """The first and last few chunks of an SSE stream, and its size in bytes.

    `usage_into` takes the stream's own usage event when there is one (the client asked for
    `stream_options.include_usage`); otherwise it charges one completion token per text event,
    so a stream is charged to its tenant whether or not the client asked for usage. Searching
    every chunk for text markers cost ~1.5 µs per relayed chunk (as much as a third of relaying
    it), so only the first 8 and last 3 chunks are searched; the events in between, all text events
    in an OpenAI stream, are counted from their bytes over the mean size of the text events seen
    (exact when events arrive one per chunk, within a few percent when they coalesce). Replicas
    that merge tokens into one event (held-back stop-string text) make it a lower bound.
    """

    def __init__(self) -> None:
        self._head: list[bytes] = []
        self._chunks: deque[bytes] = deque(maxlen=_TAIL_CHUNKS)
        self._count = 0
        self._bytes = 0

    def add(self, chunk: bytes) -> None:
        if self._count < _HEAD_CHUNKS:
            self._head.append(chunk)
        self._chunks.append(chunk)
        self._count += 1
        self._bytes += len(chunk)

    def ends_at_event_boundary(self) -> bool:
        return not self._chunks or self._chunks[-1].endswith(b"\n\n")

    def text_events(self) -> int:
        if self._count <= _HEAD_CHUNKS:  # every chunk is at hand: count exactly
            return content_events(b"".join(self._head))
        head = b"".join(self._head)
        tail = b"".join(list(self._chunks)[max(0, _HEAD_CHUNKS + len(self._chunks) - self._count):])
        sizes = [len(e) + 2 for part in (head, tail) for e in part.split(b"\n\n") if content_events(e) > 0]
        middle_bytes = self._bytes - len(head) - len(tail)
        middle = (round(middle_bytes * len(sizes) / sum(sizes)) if sizes
                  else max(0, self._count - _HEAD_CHUNKS - _TAIL_CHUNKS))
        return content_events(head) + content_events(tail) + middle

    def usage_into(self, usage: Usage) -> None:
        if not self._usage_event_into(usage):
            usage.completion_tokens = self.text_events()

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
