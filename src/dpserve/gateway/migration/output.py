"""The client's shape of a resumed response: chunks, the usage chunk and whole JSON bodies as the
first replica would have sent them (same id, created and model; vLLM's field order) (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from dpserve.gateway.migration.stream_state import StreamState

Kind = Literal["chat", "completion"]


@dataclass(frozen=True)
class ClientShape:
    """Envelope and options of the response the client is reading."""

    kind: Kind
    id: Any
    created: Any
    model: Any  # the name the client used (an alias stays the alias)
    wants_token_ids: bool
    include_usage: bool

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def chunk(self, text: str, token_ids: Sequence[int] | None, finish_reason: str | None,
              stop_reason: Any = None) -> bytes:
        """One content chunk (never a role chunk: the client had that from the first replica)."""
        if self.kind == "chat":
            delta = {"content": text} if text or finish_reason is None else {}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish_reason, "stop_reason": stop_reason}
            body = self._envelope("chat.completion.chunk")
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                      "stop_reason": stop_reason}
            body = self._envelope("text_completion")
        if self.wants_token_ids:
            choice["token_ids"] = list(token_ids or ())
        body["choices"] = [choice]
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def usage_chunk(self, usage: dict[str, Any]) -> bytes:
        body = self._envelope("chat.completion.chunk" if self.kind == "chat" else "text_completion")
        body["choices"] = []
        body["usage"] = usage
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def whole(self, state: StreamState, usage: dict[str, Any] | None) -> bytes:
        """The non-streaming body of everything `state` holds."""
        finish = state.finish_reason or "stop"
        if self.kind == "chat":
            message = {"role": "assistant", "content": state.text, **state.side_texts()}
            choice: dict[str, Any] = {"index": 0, "message": message,
                                      "logprobs": None, "finish_reason": finish,
                                      "stop_reason": state.stop_reason}
            body = self._envelope("chat.completion")
        else:
            choice = {"index": 0, "text": state.text, "logprobs": None, "finish_reason": finish,
                      "stop_reason": state.stop_reason}
            body = self._envelope("text_completion")
            if self.wants_token_ids:
                choice["prompt_token_ids"] = state.prompt_ids
        if self.wants_token_ids:
            choice["token_ids"] = state.output_ids
        body["choices"] = [choice]
        body["usage"] = usage
        if self.wants_token_ids and self.kind == "chat":
            body["prompt_token_ids"] = state.prompt_ids
        return orjson.dumps(body)


def usage_json(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": min(cached_tokens, prompt_tokens)}
    return usage
