"""OpenAI wire models: parse and validate chat/completion request bodies into frozen requests.

Validation follows vLLM: unknown fields are ignored, wrong types and out-of-range sampling values
raise RequestError (the server answers 400 with the message and the offending `param`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from dpserve.serving.limits import RequestLimits

# vLLM's default for /v1/completions without `max_tokens` (OpenAI's too); chat defaults to "the
# rest of the context", and so does an explicit `"max_tokens": null` on either endpoint.
DEFAULT_COMPLETION_MAX_TOKENS = 16
# Seeds must fit a signed 64-bit integer (torch generators and vLLM both require it).
SEED_RANGE = (-(2**63), 2**63 - 1)
# Known OpenAI features this server does not implement: rejected rather than silently ignored.
_UNSUPPORTED = ("echo", "logprobs", "top_logprobs", "suffix", "tools")
# Client strings echoed in error messages are cut to this many characters.
_ECHO_CHARS = 80
_DEFAULT_LIMITS = RequestLimits()


class RequestError(ValueError):
    """The client sent an invalid request; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class SamplingFields:
    """The sampling/control fields chat and completion requests share.

    temperature/top_p/top_k are None when the request leaves them out, so the model's recommended
    defaults (generation_config.json) can apply; top_k -1 means "off" explicitly.
    """

    model: str | None
    stream: bool
    include_usage: bool
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    seed: int | None
    stop: tuple[str, ...]
    stop_token_ids: tuple[int, ...]
    ignore_eos: bool
    user: str | None
    # vLLM's extension: the prompt's and each chunk's token ids in the response (gateways resume
    # interrupted streams from them).
    return_token_ids: bool = False


@dataclass(frozen=True)
class ChatCompletionRequest:
    messages: list[dict[str, Any]]
    fields: SamplingFields
    # vLLM's chat-template switches: open a new assistant turn (default), or continue the last
    # (assistant) message as it stands — a gateway's text-level resume of a cut answer.
    add_generation_prompt: bool = True
    continue_final_message: bool = False


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str | tuple[int, ...]
    fields: SamplingFields


def _typed(body: dict[str, Any], name: str, types: type | tuple[type, ...], default: Any,
           what: str) -> Any:
    value = body.get(name)
    if value is None:
        return default
    # bool is an int subclass: `"max_tokens": true` must not pass as 1.
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise RequestError(f"'{name}' must be {what}, got {value!r}", name)
    if not isinstance(value, types):
        raise RequestError(f"'{name}' must be {what}, got {type(value).__name__}", name)
    return value


def clip(value: str) -> str:
    """A client string for an error message, cut so that a huge value is not sent back whole."""
    return value if len(value) <= _ECHO_CHARS else value[:_ECHO_CHARS] + "..."


def _parse_stop(body: dict[str, Any], limits: RequestLimits) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stops: list[Any] = [stop]
    elif isinstance(stop, list):
        stops = stop
    else:
        raise RequestError("'stop' must be a string or a list of strings", "stop")
    if not all(isinstance(s, str) for s in stops):
        raise RequestError("'stop' must be a string or a list of strings", "stop")
    if len(stops) > limits.max_stop_strings:
        raise RequestError(f"'stop' may hold at most {limits.max_stop_strings} strings, got {len(stops)}",
                           "stop")
    if not all(isinstance(s, str) for s in stops):
        raise RequestError("'stop' must be a string or a list of strings", "stop")
    if any(s == "" for s in stops):
        raise RequestError("'stop' strings must not be empty", "stop")
    longest = max(len(s) for s in stops) if stops else 0
    if longest > limits.max_stop_string_chars:
        raise RequestError(f"'stop' strings may be at most {limits.max_stop_string_chars} characters, "
                           f"got one of {longest}", "stop")
    return tuple(dict.fromkeys(stops))  # duplicates dropped, in order (as vLLM does)


def _parse_token_ids(value: Any, name: str, max_count: int) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and len(value) > max_count:
        raise RequestError(f"'{name}' may hold at most {max_count} ids, got {len(value)}", name)
    if not isinstance(value, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        raise RequestError(f"'{name}' must be a list of non-negative integers", name)
    return tuple(dict.fromkeys(value))


def max_tokens_field(body: dict[str, Any]) -> str:
    """Which field sets the completion-token limit: `max_completion_tokens` unless it is absent
    or null, else `max_tokens` (vLLM's rule; the gateway reads a body by the same rule)."""
    return "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"


def requested_max_tokens(body: dict[str, Any]) -> int | None:
    """The limit as an OpenAI server's request model reads it (vLLM's pydantic, lax: an integral
    float or a bool is an int); None when absent, null or no integer. For the gateway, which
    passes the body on as it came; dpserve's replicas refuse all but integers. A float is taken
    only within JSON's integers here (orjson's 64 bits): 1e300 would be an int no body could carry."""
    value = body.get(max_tokens_field(body))
    if isinstance(value, float) and value.is_integer() and abs(value) < 2.0 ** 63:
        return int(value)
    return int(value) if isinstance(value, int) else None


def _parse_max_tokens(body: dict[str, Any]) -> int | None:
    name = max_tokens_field(body)
    max_tokens = _typed(body, name, int, None, "an integer")
    if max_tokens is not None and max_tokens < 1:
        raise RequestError(f"'{name}' must be at least 1, got {max_tokens}", name)
    return max_tokens


def _number(body: dict[str, Any], name: str) -> float | None:
    value = _typed(body, name, (int, float), None, "a number")
    if value is None:
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf
    if not math.isfinite(number):
        raise RequestError(f"'{name}' must be a finite number", name)
    return number


def _parse_sampling_values(body: dict[str, Any]) -> tuple[float | None, float | None, int | None]:
    """temperature, top_p, top_k as given (None when absent); ranges as vLLM checks them."""
    temperature, top_p = _number(body, "temperature"), _number(body, "top_p")
    if temperature is not None and temperature < 0:
        raise RequestError(f"'temperature' must be >= 0, got {temperature}", "temperature")
    if top_p is not None and not 0 < top_p <= 1:
        raise RequestError(f"'top_p' must be in (0, 1], got {top_p}", "top_p")
    top_k = _typed(body, "top_k", int, None, "an integer")
    if top_k is not None and (top_k < -1 or top_k == 0):
        raise RequestError(f"'top_k' must be -1 (off) or at least 1, got {top_k}", "top_k")
    return temperature, top_p, top_k


def _parse_stream(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = _typed(body, "stream", bool, False, "a boolean")
    options = _typed(body, "stream_options", dict, {}, "an object")
    include_usage = _typed(options, "include_usage", bool, False, "a boolean")
    if options and not stream:
        raise RequestError("'stream_options' is only allowed when 'stream' is true", "stream_options")
    return stream, include_usage


def _reject_unsupported(body: dict[str, Any]) -> None:
    for name in _UNSUPPORTED:
        if body.get(name) not in (None, False, 0, []):
            raise RequestError(f"'{name}' is not supported by this server", name)


def _parse_seed(body: dict[str, Any]) -> int | None:
    seed = _typed(body, "seed", int, None, "an integer")
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise RequestError(f"'seed' must fit a signed 64-bit integer, got {seed}", "seed")
    return seed


def parse_sampling_fields(body: dict[str, Any], limits: RequestLimits = _DEFAULT_LIMITS) -> SamplingFields:
    """The shared fields of a chat or completion body; raises RequestError."""
    _reject_unsupported(body)
    n = _typed(body, "n", int, 1, "an integer")
    if n != 1:
        raise RequestError(f"only n=1 is supported, got n={n}", "n")
    if body.get("best_of") not in (None, 1):
        raise RequestError("only best_of=1 is supported", "best_of")
    temperature, top_p, top_k = _parse_sampling_values(body)
    stream, include_usage = _parse_stream(body)
    return SamplingFields(
        model=_typed(body, "model", str, None, "a string"),
        stream=stream,
        include_usage=include_usage,
        max_tokens=_parse_max_tokens(body),
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=_parse_seed(body),
        stop=_parse_stop(body, limits),
        stop_token_ids=_parse_token_ids(body.get("stop_token_ids"), "stop_token_ids",
                                        limits.max_stop_token_ids),
        ignore_eos=_typed(body, "ignore_eos", bool, False, "a boolean"),
        user=_typed(body, "user", str, None, "a string"),
        return_token_ids=_typed(body, "return_token_ids", bool, False, "a boolean"),
    )


def _message_content(message: dict[str, Any], index: int) -> str | None:
    """Content as a string: text parts are joined; other part types are not supported."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"messages[{index}].content must be a string or a list of parts", "messages")
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise RequestError(f"messages[{index}].content: only text parts are supported", "messages")
        texts.append(part["text"])
    return "".join(texts)


def parse_messages(value: Any) -> list[dict[str, Any]]:
    """A non-empty list of {role, content}; content parts flattened to text."""
    if value is None:
        raise RequestError("'messages' is required", "messages")
    if not isinstance(value, list) or not value:
        raise RequestError("'messages' must be a non-empty list", "messages")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be an object", "messages")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise RequestError(f"messages[{i}].role must be a non-empty string", "messages")
        content = _message_content(message, i)
        if content is None and role != "assistant":
            raise RequestError(f"messages[{i}].content is required for role {clip(role)!r}", "messages")
        messages.append({**message, "content": content or ""})
    return messages


def parse_prompt(value: Any) -> str | tuple[int, ...]:
    """A string, a list of token ids, or a one-element list of either (no batched prompts)."""
    if value is None:
        raise RequestError("'prompt' is required", "prompt")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]
    if isinstance(value, str):
        if not value:
            raise RequestError("'prompt' must not be empty", "prompt")
        return value
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool)
                                                 for t in value):
        if any(t < 0 for t in value):
            raise RequestError("'prompt' token ids must be non-negative", "prompt")
        return tuple(value)
    raise RequestError("'prompt' must be a non-empty string or a list of token ids "
                       "(batched prompts are not supported)", "prompt")


def parse_chat_request(body: Any, limits: RequestLimits = _DEFAULT_LIMITS) -> ChatCompletionRequest:
    messages = parse_messages(_require_object(body).get("messages"))
    fields = parse_sampling_fields(body, limits)
    add_generation_prompt = _typed(body, "add_generation_prompt", bool, True, "a boolean")
    continue_final_message = _typed(body, "continue_final_message", bool, False, "a boolean")
    if continue_final_message and add_generation_prompt:  # vLLM's rule: one or the other
        raise RequestError("'continue_final_message' needs 'add_generation_prompt': false",
                           "continue_final_message")
    return ChatCompletionRequest(messages, fields, add_generation_prompt, continue_final_message)


def parse_completion_request(body: Any, limits: RequestLimits = _DEFAULT_LIMITS) -> CompletionRequest:
    fields = parse_sampling_fields(_require_object(body), limits)
    # Absent: OpenAI's default of 16. An explicit null is the rest of the context, as in vLLM
    # (a gateway resuming a chat answer on this endpoint relies on it).
    if fields.max_tokens is None and "max_tokens" not in body and "max_completion_tokens" not in body:
        fields = replace(fields, max_tokens=DEFAULT_COMPLETION_MAX_TOKENS)
    return CompletionRequest(prompt=parse_prompt(body.get("prompt")), fields=fields)


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body
