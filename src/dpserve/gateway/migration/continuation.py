"""The request that resumes a cut response on another replica (pure).

Token-exact (the replicas returned token ids): `/v1/completions` with the prompt's token ids plus
every generated id the client has received as the prompt, `max_tokens` (and `min_tokens`)
reduced by what was generated, and the original sampling fields — so greedy output continues
exactly as an uninterrupted run would; a seeded request keeps its seed (a fresh random draw from
there on). Text-level (no token ids): the same endpoint with the text so far — the assistant's
partial message continued with vLLM's `continue_final_message` for chat, prompt + text for
completions — and `max_tokens` reduced by the chunks received (about one token each).

Exactness needs the ids received to be exactly the tokens of the text received. dpserve's
replicas hold a token's id back with its text (serving/generation.py); vLLM sends each step's ids
at once, so a vLLM replica cut while it held text back (a possible stop string, an incomplete
character) loses that text on resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from dpserve.gateway.migration.stream_state import StreamState
from dpserve.http_names import CHAT_PATH, COMPLETIONS_PATH
from dpserve.protocol import DEFAULT_COMPLETION_MAX_TOKENS, requested_max_tokens

Mode = Literal["token", "text"]

# Fields that describe the chat turn or the response's shape, not the sampling: a completions
# continuation does not take them (the gateway shapes the answer itself).
_CHAT_ONLY = ("messages", "add_generation_prompt", "continue_final_message", "chat_template",
              "chat_template_kwargs", "documents", "add_special_tokens", "tool_choice",
              "parallel_tool_calls", "max_completion_tokens")
_STREAM_SHAPE = ("stream", "stream_options", "return_token_ids", "echo", "suffix", "prompt")
_ALWAYS = {"stream": True, "stream_options": {"include_usage": True}, "return_token_ids": True}


@dataclass(frozen=True)
class Continuation:
    path: str
    body: bytes
    mode: Mode
    route_text: str  # the routing text plus the answer so far: the new replica now caches both


def max_tokens_of(body: dict[str, Any], path: str) -> int | None:
    """The request's completion-token limit; None = the rest of the context. A completions body
    without one gets OpenAI's (and vLLM's) default, 16; an explicit null is the rest of the context."""
    if path == COMPLETIONS_PATH and "max_tokens" not in body and "max_completion_tokens" not in body:
        return DEFAULT_COMPLETION_MAX_TOKENS
    return requested_max_tokens(body)


def remaining_tokens(body: dict[str, Any], path: str, state: StreamState) -> int | None:
    """Tokens still allowed; None when unlimited (the rest of the context)."""
    limit = max_tokens_of(body, path)
    return None if limit is None else limit - generated_count(state)


def generated_count(state: StreamState) -> int:
    """Tokens generated so far: exact with ids, else one per content chunk."""
    return state.content_chunks if state.ids_missing else len(state.output_ids)


def build_continuation(body: dict[str, Any], path: str, state: StreamState,
                       route_text: str) -> Continuation | str:
    """The resuming request, or why none can be made (a short reason for metrics and logs)."""
    limited = _reduced_limits(body, path, generated_count(state))
    if not state.ids_missing and state.prompt_ids is not None:
        cont = {k: v for k, v in body.items() if k not in _CHAT_ONLY and k not in _STREAM_SHAPE}
        cont.update(limited, prompt=state.prompt_ids + state.output_ids, **_ALWAYS)
        return Continuation(COMPLETIONS_PATH, orjson.dumps(cont), "token", _route(route_text, path, state))
    if path == CHAT_PATH:
        return Continuation(CHAT_PATH, orjson.dumps(_chat_text_body(body, state, limited)), "text",
                            _route(route_text, path, state))
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        return "token_prompt_without_ids"  # token ids in, no ids back: nothing to append the text to
    cont = {k: v for k, v in body.items() if k not in _STREAM_SHAPE}
    cont.update(limited, prompt=prompt + state.text, **_ALWAYS)
    return Continuation(COMPLETIONS_PATH, orjson.dumps(cont), "text", _route(route_text, path, state))


def _reduced_limits(body: dict[str, Any], path: str, done: int) -> dict[str, Any]:
    """`max_tokens` always explicit: null (the rest of the context, as vLLM reads it) must not
    become the completions endpoint's default of 16."""
    max_tokens = max_tokens_of(body, path)
    out: dict[str, Any] = {"max_tokens": None if max_tokens is None else max(1, max_tokens - done)}
    min_tokens = body.get("min_tokens")
    if isinstance(min_tokens, int) and not isinstance(min_tokens, bool) and min_tokens > 0:
        out["min_tokens"] = max(0, min_tokens - done)
    return out


def _chat_text_body(body: dict[str, Any], state: StreamState, limited: dict[str, Any]) -> dict[str, Any]:
    messages = list(body.get("messages") or [])
    last = messages[-1] if messages else None
    if body.get("continue_final_message") and isinstance(last, dict) and isinstance(last.get("content"), str):
        messages[-1] = {**last, "content": last["content"] + state.text}  # it was already a continuation
    else:
        messages.append({"role": "assistant", "content": state.text})
    cont = {k: v for k, v in body.items() if k not in ("max_completion_tokens", *_STREAM_SHAPE)}
    cont.update(limited, messages=messages, continue_final_message=True, add_generation_prompt=False,
                **_ALWAYS)
    return cont


def _route(route_text: str, path: str, state: StreamState) -> str:
    return route_text + ("<|assistant|>" if path == CHAT_PATH else "") + state.text
