"""Validated OpenAI request → engine input: tokenise, check context length, build SamplingParams."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from dpserve.errors import HTTPError
from dpserve.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    RequestError,
    SamplingFields,
    clip,
    parse_chat_request,
    parse_completion_request,
)
from dpserve.serving.engine_client import EngineClient, PromptTooLongError, SamplingParams, Tokenizer
from dpserve.serving.limits import RequestLimits
from dpserve.serving.sampling_defaults import SamplingDefaults, capped_max_tokens, sampling_params

_NO_LIMITS_GIVEN = RequestLimits()
_NO_DEFAULTS = SamplingDefaults()

Kind = Literal["chat", "completion"]


@dataclass(frozen=True)
class PreparedRequest:
    """Everything the server needs to run one request and shape its response."""

    kind: Kind
    request_id: str
    created: int
    model: str
    prompt_token_ids: list[int]
    sampling: SamplingParams
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    # vLLM's `return_token_ids`: prompt ids in the first chunk, each chunk's ids beside its text.
    return_token_ids: bool = False
    # The prompt came as token ids (a resumed stream): its tail is the detokenizer's left context.
    prompt_is_token_ids: bool = False


def bad_request(exc: RequestError) -> HTTPError:
    return HTTPError(400, exc.message, param=exc.param)


def prepare(kind: Kind, body: Any, client: EngineClient, served_model_name: str, *,
            limits: RequestLimits = _NO_LIMITS_GIVEN,
            defaults: SamplingDefaults = _NO_DEFAULTS) -> PreparedRequest:
    """Parse, validate and tokenise a chat or completion body; raises HTTPError (4xx).

    Tokenising and chat templates take milliseconds to seconds: call this on a worker thread.
    """
    try:
        parsed: ChatCompletionRequest | CompletionRequest
        parsed = (parse_chat_request(body, limits) if kind == "chat"
                  else parse_completion_request(body, limits))
    except RequestError as exc:
        raise bad_request(exc) from exc
    fields = parsed.fields
    if fields.model is not None and fields.model != served_model_name:
        raise HTTPError(404, f"The model `{clip(fields.model)}` does not exist; this replica serves "
                        f"`{served_model_name}`", code="model_not_found", param="model")
    prompt_param = "messages" if kind == "chat" else "prompt"
    prompt_ids = prompt_token_ids(parsed, client.tokenizer, client.max_model_len, prompt_param)
    max_tokens = _checked_max_tokens(fields, len(prompt_ids), client.max_model_len, prompt_param)
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return PreparedRequest(
        kind=kind,
        request_id=f"{prefix}-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=served_model_name,
        prompt_token_ids=prompt_ids,
        sampling=sampling_params(fields, defaults, capped_max_tokens(max_tokens, defaults)),
        stop=fields.stop,
        stream=fields.stream,
        include_usage=fields.include_usage,
        return_token_ids=fields.return_token_ids,
        prompt_is_token_ids=isinstance(parsed, CompletionRequest) and not isinstance(parsed.prompt, str),
    )


def prompt_token_ids(parsed: ChatCompletionRequest | CompletionRequest, tokenizer: Tokenizer,
                     max_model_len: int | None = None, prompt_param: str = "prompt") -> list[int]:
    """The prompt's token ids as the engine gets them (chat template applied); the gateway's
    precise_prefix policy calls this too, so its block keys are the engine's. HTTPError 400 for a
    prompt that cannot be tokenised, or (given `max_model_len`) that cannot fit it."""
    try:
        if isinstance(parsed, ChatCompletionRequest):
            return list(tokenizer.apply_chat_template(
                parsed.messages, continue_final_message=parsed.continue_final_message))
        if isinstance(parsed.prompt, str):
            return list(tokenizer.encode(parsed.prompt))
    except PromptTooLongError as exc:
        raise HTTPError(400, f"This model's maximum context length is {max_model_len} tokens. "
                        f"However, your prompt is {exc.num_chars} characters long, so it has at least "
                        f"{exc.min_tokens} tokens, which leaves no room for completion tokens.",
                        param=prompt_param) from exc
    except ValueError as exc:
        raise HTTPError(400, f"cannot apply the chat template: {exc}", param="messages") from exc
    if max_model_len is not None and len(parsed.prompt) >= max_model_len:  # before its ids are checked
        raise HTTPError(400, _no_room_message(max_model_len, len(parsed.prompt)), param=prompt_param)
    vocab_size = getattr(tokenizer, "vocab_size", None)  # optional on the Tokenizer protocol
    if isinstance(vocab_size, int) and max(parsed.prompt) >= vocab_size:
        raise HTTPError(400, f"prompt token id {max(parsed.prompt)} is out of range (vocabulary size "
                        f"{vocab_size})", param="prompt")
    return list(parsed.prompt)


def _checked_max_tokens(fields: SamplingFields, num_prompt_tokens: int, max_model_len: int,
                        prompt_param: str) -> int:
    """vLLM's rules: the prompt must leave room for one token, prompt + max_tokens must fit."""
    if num_prompt_tokens == 0:
        raise HTTPError(400, "the prompt is empty after tokenisation", param=prompt_param)
    if num_prompt_tokens >= max_model_len:
        raise HTTPError(400, _no_room_message(max_model_len, num_prompt_tokens), param=prompt_param)
    if fields.max_tokens is None:
        return max_model_len - num_prompt_tokens
    if num_prompt_tokens + fields.max_tokens > max_model_len:
        raise HTTPError(400, f"This model's maximum context length is {max_model_len} tokens. "
                        f"However, you requested {num_prompt_tokens + fields.max_tokens} tokens "
                        f"({num_prompt_tokens} in the prompt, {fields.max_tokens} for the completion). "
                        "Please reduce the prompt or max_tokens.", param="max_tokens")
    return fields.max_tokens


def _no_room_message(max_model_len: int, num_prompt_tokens: int) -> str:
    return (f"This model's maximum context length is {max_model_len} tokens. However, your prompt has "
            f"{num_prompt_tokens} tokens, which leaves no room for completion tokens.")
