"""JSON shapes of chat/completion responses and stream chunks, as vLLM's OpenAI server sends them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dpserve.serving.prepare import PreparedRequest


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    def to_json(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}


def _envelope(req: PreparedRequest, obj: str) -> dict[str, Any]:
    return {"id": req.request_id, "object": obj, "created": req.created, "model": req.model}


StopReason = str | int | None  # vLLM's extension: which stop string or stop token id ended it


def full_response(req: PreparedRequest, text: str, finish_reason: str, usage: Usage,
                  stop_reason: StopReason = None, token_ids: Sequence[int] = ()) -> dict[str, Any]:
    """The non-streaming body; with `return_token_ids`, vLLM's `prompt_token_ids` (top level for
    chat, in the choice for completions) and the choice's `token_ids`."""
    if req.kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "logprobs": None, "finish_reason": finish_reason,
                                  "stop_reason": stop_reason}
        body = _envelope(req, "chat.completion")
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                  "stop_reason": stop_reason}
        body = _envelope(req, "text_completion")
        if req.return_token_ids:
            choice["prompt_token_ids"] = req.prompt_token_ids
    if req.return_token_ids:
        choice["token_ids"] = list(token_ids)
    body["choices"] = [choice]
    body["usage"] = usage.to_json()
    if req.return_token_ids and req.kind == "chat":
        body["prompt_token_ids"] = req.prompt_token_ids
    return body


def role_chunk(req: PreparedRequest) -> dict[str, Any]:
    """The first chat chunk: the assistant role and empty content (completions have none); with
    `return_token_ids`, the prompt's ids at the top level, as vLLM sends them."""
    body = _envelope(req, "chat.completion.chunk")
    body["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                        "finish_reason": None}]
    if req.return_token_ids:
        body["prompt_token_ids"] = req.prompt_token_ids
    return body


def delta_chunk(req: PreparedRequest, text: str, finish_reason: str | None,
                stop_reason: StopReason = None, token_ids: Sequence[int] = (),
                first: bool = False) -> dict[str, Any]:
    """One content chunk; with `return_token_ids`, the choice's `token_ids` (and, in a completion's
    `first` chunk, `prompt_token_ids`), last in the choice as vLLM orders them."""
    if req.kind == "chat":
        delta = {"content": text} if text or finish_reason is None else {}
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish_reason, "stop_reason": stop_reason}
        body = _envelope(req, "chat.completion.chunk")
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                  "stop_reason": stop_reason}
        body = _envelope(req, "text_completion")
        if req.return_token_ids and first:
            choice["prompt_token_ids"] = req.prompt_token_ids
    if req.return_token_ids:
        choice["token_ids"] = list(token_ids)
    body["choices"] = [choice]
    return body


def usage_chunk(req: PreparedRequest, usage: Usage) -> dict[str, Any]:
    """The final chunk when stream_options.include_usage: empty choices, usage set."""
    body = _envelope(req, "chat.completion.chunk" if req.kind == "chat" else "text_completion")
    body["choices"] = []
    body["usage"] = usage.to_json()
    return body
