"""SSE framing shared by the relays: where events end, and an event's data payload."""

from __future__ import annotations

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"
DONE_EVENT_CRLF = b"data: [DONE]\r\n\r\n"


def event_end(data: bytes) -> int:
    """Index just past the last SSE event boundary (a blank line) in `data`; 0 if none."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def event_payloads(data: bytes) -> list[bytes]:
    """The `data:` payload of every complete event in `data` (multi-line data joined with \\n);
    comments and other fields are skipped."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    out = []
    for event in data.split(b"\n\n"):
        if event.startswith(b"data: ") and b"\n" not in event:  # the usual event: one data line
            out.append(event[6:])
            continue
        lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if lines:
            out.append(b"\n".join(lines))
    return out
