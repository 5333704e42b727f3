"""Which requests may be resumed on another replica, read once from the parsed body (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Request fields whose output a continuation cannot reproduce: structured output and guided
# decoding restart their grammar from the prompt; tool calls are parsed from the whole answer;
# logprobs and echo belong to the tokens of the first replica's run.
_EXCLUDING_FIELDS = (
    ("tools", "tools"), ("functions", "tools"), ("guided_json", "structured_output"),
    ("guided_regex", "structured_output"), ("guided_choice", "structured_output"),
    ("guided_grammar", "structured_output"), ("structured_outputs", "structured_output"),
    ("logprobs", "logprobs"), ("top_logprobs", "logprobs"), ("prompt_logprobs", "logprobs"),
    ("echo", "echo"))


@dataclass(frozen=True, slots=True)
class ResumeFacts:
    """What resuming needs to know about one request, decided before it is sent.

    `excluded` names why the request can never be resumed (it keeps today's error event), or
    is None. `wants_token_ids`: the client asked for `return_token_ids` itself, so the ids the
    gateway relies on are relayed to it instead of stripped.
    """

    excluded: str | None = None
    wants_token_ids: bool = False
    include_usage: bool = False


NOT_RESUMABLE = ResumeFacts(excluded="unknown")
# Every request names one of few fact sets: made once each (a frozen dataclass costs ~0.5 µs to
# build, and this runs on every request).
_KNOWN: dict[tuple[str | None, bool, bool], ResumeFacts] = {}
# The body fields any of the facts depend on: a body with none of them (most) is read in one
# set operation.
_READ = frozenset({"n", "best_of", "prompt", "response_format", "return_token_ids", "stream_options",
                   *(name for name, _ in _EXCLUDING_FIELDS)})
_PLAIN = ResumeFacts()


def resume_facts(body: dict[str, Any]) -> ResumeFacts:
    """The facts of a parsed chat/completions body (~0.1 µs for a body without any of `_READ`)."""
    if _READ.isdisjoint(body):
        return _PLAIN
    options = body.get("stream_options")
    key = (_exclusion(body), body.get("return_token_ids") is True,
           isinstance(options, dict) and options.get("include_usage") is True)
    facts = _KNOWN.get(key)
    if facts is None:
        facts = _KNOWN[key] = ResumeFacts(*key)
    return facts


def _exclusion(body: dict[str, Any]) -> str | None:
    if body.get("n") not in (None, 1) or body.get("best_of") not in (None, 1):
        return "n"
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) > 1 and isinstance(prompt[0], str | list):
        return "n"  # a batch of prompts: several answers in one response
    for name, reason in _EXCLUDING_FIELDS:
        value = body.get(name)
        if value is not None and value is not False and value != []:
            return reason
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type", "text") != "text":
        return "structured_output"
    return None
