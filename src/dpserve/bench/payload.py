"""OpenAI request bodies and headers for one turn of a conversation (chat or completions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dpserve.bench.conversation import Conversation
from dpserve.http_names import CHAT_PATH, COMPLETIONS_PATH, SESSION_HEADER

TURN_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class RequestOptions:
    """What every request of a run shares."""

    endpoint: Literal["chat", "completions"]
    model: str
    stream: bool = True
    ignore_eos: bool = False
    temperature: float = 0.0
    api_key: str | None = None

    @property
    def path(self) -> str:
        return CHAT_PATH if self.endpoint == "chat" else COMPLETIONS_PATH


def chat_messages(conv: Conversation, turn_index: int, replies: Sequence[str]) -> list[dict[str, str]]:
    """System prompt, then each earlier user turn with its reply, then turn `turn_index`."""
    messages = [{"role": "system", "content": conv.system_text}] if conv.system_text else []
    for turn, reply in zip(conv.turns[:turn_index], replies, strict=True):
        messages += [{"role": "user", "content": turn.user_text},
                     {"role": "assistant", "content": reply}]
    messages.append({"role": "user", "content": conv.turns[turn_index].user_text})
    return messages


def completion_prompt(conv: Conversation, turn_index: int, replies: Sequence[str]) -> str:
    """The same history as plain text, parts joined by blank lines (prefix-stable across turns)."""
    parts = [conv.system_text] if conv.system_text else []
    for turn, reply in zip(conv.turns[:turn_index], replies, strict=True):
        parts += [turn.user_text, reply]
    parts.append(conv.turns[turn_index].user_text)
    return TURN_SEPARATOR.join(parts)


def request_body(opts: RequestOptions, conv: Conversation, turn_index: int,
                 replies: Sequence[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"model": opts.model, "max_tokens": conv.turns[turn_index].output_len,
                            "temperature": opts.temperature, "stream": opts.stream}
    if opts.endpoint == "chat":
        body["messages"] = chat_messages(conv, turn_index, replies)
    else:
        body["prompt"] = completion_prompt(conv, turn_index, replies)
    if opts.stream:
        body["stream_options"] = {"include_usage": True}
    if opts.ignore_eos:
        body["ignore_eos"] = True  # vLLM/SGLang extension: generate exactly max_tokens
    return body


def request_headers(opts: RequestOptions, conv: Conversation) -> dict[str, str]:
    headers = {}
    if conv.session_id is not None:
        headers[SESSION_HEADER] = conv.session_id
    if opts.api_key:
        headers["Authorization"] = f"Bearer {opts.api_key}"
    return headers
