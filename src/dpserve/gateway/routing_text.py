"""What a request routes on: parse the body once, take the routing text and the session key.

For chat the routing text is the whole conversation, every message with its role, in order, so
two conversations that share a system prompt but diverge later are told apart by the tree, and
turn N+1 of a conversation extends turn N's prefix exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dpserve.errors import HTTPError
from dpserve.gateway.migration.eligibility import NOT_RESUMABLE, ResumeFacts, resume_facts
from dpserve.gateway.policies.base import RouteRequest
from dpserve.http_names import CHAT_PATH, SESSION_HEADER
from dpserve.json_body import load_json
from dpserve.protocol import requested_max_tokens


@dataclass(frozen=True)
class ParsedRequest:
    """The parts of a client body the gateway needs; the raw bytes are forwarded unchanged."""

    route: RouteRequest
    stream: bool
    prompt_chars: int
    max_tokens: int | None
    model: str | None = None
    # The `model` the client sent when it was an alias (then `model` is the served name).
    alias: str | None = None
    # Whether and how the response may be resumed on another replica (migration/eligibility.py).
    resume: ResumeFacts = NOT_RESUMABLE


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones, in order
        return "".join(p.get("text", "") for p in content if isinstance(p, dict)
                       and isinstance(p.get("text"), str))
    return ""


def chat_text(messages: list[Any]) -> str:
    parts = []
    for m in messages:
        if not isinstance(m, dict):
            raise HTTPError(400, "each entry of 'messages' must be an object", param="messages")
        parts.append(f"<|{m.get('role', '')}|>{_content_text(m.get('content'))}")
    return "".join(parts)


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def prompt_text(prompt: Any) -> str:
    """Routing text of every prompt shape an OpenAI server accepts: a string, token ids, or a batch
    of either (`["a", "b"]`, `[[1, 2], [3]]`); the replica decides what it serves (dpserve's take
    one prompt, vLLM's a batch)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return "".join(prompt)
    if _is_token_ids(prompt):
        return " ".join(map(str, prompt))  # token ids: the same ids give the same text
    if isinstance(prompt, list) and prompt and all(_is_token_ids(p) for p in prompt):
        return "\n".join(" ".join(map(str, p)) for p in prompt)
    raise HTTPError(400, "'prompt' must be a string, a list of strings, a list of token ids, or a list "
                         "of lists of token ids", param="prompt")


def _load_object(raw: bytes) -> dict[str, Any]:
    body = load_json(raw)
    if not isinstance(body, dict):
        raise HTTPError(400, "request body must be a JSON object")
    return body


def parse_request(path: str, raw: bytes, headers: Mapping[str, str]) -> ParsedRequest:
    """Body → ParsedRequest; 400 JSON for what no replica could serve either."""
    body = _load_object(raw)
    if path == CHAT_PATH:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPError(400, "'messages' must be a non-empty list", param="messages")
        text = chat_text(messages)
    else:
        if "prompt" not in body:
            raise HTTPError(400, "'prompt' is required", param="prompt")
        text = prompt_text(body["prompt"])
    user = body.get("user")
    session = headers.get(SESSION_HEADER) or (user if isinstance(user, str) and user else None)
    max_tokens = requested_max_tokens(body)
    model = body.get("model")
    return ParsedRequest(RouteRequest(text, session, path, body), body.get("stream") is True, len(text),
                         max_tokens, model if isinstance(model, str) and model else None,
                         resume=resume_facts(body))
