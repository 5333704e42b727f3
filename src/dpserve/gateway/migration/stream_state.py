"""What a client has received of one response, rebuilt from the SSE events relayed to it (pure).

Events of chat (`choices[0].delta.content`) and completion (`choices[0].text`) streams fold into
one `StreamState`, across replicas (with a chat delta's other text fields, such as a reasoning
model's `reasoning_content`): the first stream gives the envelope (`id`, `created`, `model`) and
the prompt's token ids (vLLM's `return_token_ids`: top-level `prompt_token_ids` in a
chat stream's first chunk, `choices[0].prompt_token_ids` in a completion stream's); every stream
adds its text, token ids, finish reason and usage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from dpserve.gateway.sse import DONE

# The finish reason of a request the replica gave up on: dpserve's replicas send it before their
# mid-stream error event, vLLM for a request it aborted. Not an end: the response moves on.
ABORT = "abort"


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~3x here (one per event)
class Piece:
    """One event's contribution: text, ids, finish, usage; `done` for [DONE], `error` for an error event."""

    text: str = ""
    token_ids: list[int] | None = None
    finish_reason: str | None = None
    stop_reason: Any = None
    usage: dict[str, Any] | None = None
    prompt_token_ids: list[int] | None = None
    event: dict[str, Any] | None = None  # the whole event: its id, created and model
    role: bool = False
    done: bool = False
    error: Any = None
    side: dict[str, str] | None = None  # a chat delta's text fields besides `content`


def parse_piece(payload: bytes) -> Piece | None:
    """One SSE `data:` payload → Piece; None for what is not a response event."""
    if payload.strip() == DONE:
        return Piece(done=True)
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return piece_of(event)


def piece_of(event: Any) -> Piece | None:
    """One parsed event → Piece; None for what is not a response event."""
    if not isinstance(event, dict):
        return None
    if "error" in event and "choices" not in event:
        return Piece(error=event["error"])
    if event.get("object") == "error":  # vLLM's older error shape
        return Piece(error=event)
    return _content_piece(event)


_NO_CHOICE: dict[str, Any] = {}
_OWN = ("role", "content")  # a delta's fields that are not side text


def _content_piece(event: dict[str, Any]) -> Piece:
    choices = event.get("choices")
    choice = choices[0] if choices and isinstance(choices[0], dict) else _NO_CHOICE
    delta = choice.get("delta")
    side = None
    if isinstance(delta, dict):
        text, role = delta.get("content"), "role" in delta
        if len(delta) > ("content" in delta):  # more than the content: a role, reasoning, ...
            side = {k: v for k, v in delta.items() if k not in _OWN and v and isinstance(v, str)} or None
    else:
        text, role = choice.get("text"), False
    ids = choice.get("token_ids")
    prompt_ids = event.get("prompt_token_ids") or choice.get("prompt_token_ids")
    usage = event.get("usage")
    return Piece(text if isinstance(text, str) else "", ids if isinstance(ids, list) else None,
                 choice.get("finish_reason"), choice.get("stop_reason"),
                 usage if isinstance(usage, dict) else None,
                 prompt_ids if isinstance(prompt_ids, list) else None, event, role, side=side)


@dataclass
class StreamState:
    """Everything the client has been sent so far, over every replica that served it."""

    id: Any = None
    created: Any = None
    model: Any = None
    prompt_ids: list[int] | None = None
    output_ids: list[int] = field(default_factory=list)
    ids_missing: bool = False  # some text came without token ids: only a text-level resume
    text_parts: list[str] = field(default_factory=list)
    side_parts: dict[str, list[str]] = field(default_factory=dict)  # e.g. reasoning_content's parts
    content_chunks: int = 0  # chunks with text: the token count a text-level resume assumes
    role_sent: bool = False
    finish_reason: str | None = None
    stop_reason: Any = None
    usage: dict[str, Any] | None = None  # the latest stream's own usage event
    done: bool = False
    error: Any = None
    aborted: bool = False  # the replica gave up on the request (finish_reason "abort"): a failure

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def side_texts(self) -> dict[str, str]:
        return {name: "".join(parts) for name, parts in self.side_parts.items()}

    @property
    def side_text_unresumable(self) -> bool:
        """Side text (a reasoning model's thinking) came, and either the content has not begun
        (the plain text a continuation returns could not be split into the two) or there are no
        token ids (a text-level continuation would leave the thinking out of its prompt)."""
        return bool(self.side_parts) and (not self.text_parts or self.ids_missing)

    def add(self, piece: Piece, *, first_stream: bool) -> None:
        """Fold one event in; the envelope and prompt ids only from the first stream."""
        if piece.done:
            self.done = True
            return
        if piece.error is not None:
            self.error = piece.error
            return
        if piece.finish_reason == ABORT:  # the replica failed: what this event carries never went out
            self.aborted = True
            return
        if first_stream:
            event = piece.event
            if self.id is None and event is not None:
                self.id, self.created, self.model = event.get("id"), event.get("created"), event.get("model")
            if piece.prompt_token_ids is not None and self.prompt_ids is None:
                self.prompt_ids = piece.prompt_token_ids
        self.role_sent |= piece.role
        if piece.text or piece.side:
            if piece.text:
                self.text_parts.append(piece.text)
            if piece.side:
                for name, value in piece.side.items():
                    self.side_parts.setdefault(name, []).append(value)
            self.content_chunks += 1
            self.ids_missing |= piece.token_ids is None
        if piece.token_ids:
            self.output_ids += piece.token_ids
        if piece.finish_reason is not None:
            self.finish_reason, self.stop_reason = piece.finish_reason, piece.stop_reason
        if piece.usage is not None:
            self.usage = piece.usage
