"""JSON shapes of chat/completion responses and stream chunks, as vLLM's OpenAI server sends them."""

from __future__ import annotations

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
                  stop_reason: StopReason = None) -> dict[str, Any]:
    """The non-streaming body."""
    if req.kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "logprobs": None, "finish_reason": finish_reason,
                                  "stop_reason": stop_reason}
        body = _envelope(req, "chat.completion")
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                  "stop_reason": stop_reason}
        body = _envelope(req, "text_completion")
    body["choices"] = [choice]
    body["usage"] = usage.to_json()
    return body


def role_chunk(req: PreparedRequest) -> dict[str, Any]:
    """The first chat chunk: the assistant role and empty content (completions have none)."""
    body = _envelope(req, "chat.completion.chunk")
    body["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                        "finish_reason": None}]
    return body


def delta_chunk(req: PreparedRequest, text: str, finish_reason: str | None,
                stop_reason: StopReason = None) -> dict[str, Any]:
    if req.kind == "chat":
        delta = {"content": text} if text or finish_reason is None else {}
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish_reason, "stop_reason": stop_reason}
        body = _envelope(req, "chat.completion.chunk")
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                  "stop_reason": stop_reason}
        body = _envelope(req, "text_completion")
    body["choices"] = [choice]
    return body


def usage_chunk(req: PreparedRequest, usage: Usage) -> dict[str, Any]:
    """The final chunk when stream_options.include_usage: empty choices, usage set."""
    body = _envelope(req, "chat.completion.chunk" if req.kind == "chat" else "text_completion")
    body["choices"] = []
    body["usage"] = usage.to_json()
    return body
