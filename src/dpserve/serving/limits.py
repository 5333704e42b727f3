"""RequestLimits: how much one request may ask of a replica (flags shared by `dpserve engine` and `sim`).

Every bound is checked before the work it protects: the body size before it is read or parsed,
list lengths while parsing, so no single request can stall the event loop (and /health with it)
or make every engine step of the other requests slower.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpserve.config import option, require

# 8 MiB holds a 1M-token prompt as text; token-id prompts are bounded by json_body's MAX_JSON_COMMAS
# (262,144). Parse time is bounded by json_body's structure limits, not by this.
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
# vLLM's VLLM_MAX_STOP_STRINGS default, which is also OpenAI's documented limit ("up to 4 sequences").
DEFAULT_MAX_STOP_STRINGS = 4


@dataclass(frozen=True)
class RequestLimits:
    """Per-request bounds of the replica server; a request beyond one gets a 4xx naming the param."""

    max_request_bytes: int = option(
        DEFAULT_MAX_REQUEST_BYTES,
        "largest request body in bytes: a bigger announced Content-Length gets 413 before the body "
        "is read, a chunked body is cut off with 413 once it passes this (`dpserve serve` sets it to "
        "its own --max-request-bytes); a body of 64 KiB or more may hold at most 65,536 '{'/'[', "
        "131,072 '\"' and 262,144 ',' bytes (400 beyond)")
    max_stop_strings: int = option(
        DEFAULT_MAX_STOP_STRINGS, "most 'stop' strings one request may give (vLLM's and OpenAI's limit)")
    max_stop_string_chars: int = option(
        1024, "longest 'stop' string in characters")
    max_stop_token_ids: int = option(1024, "most 'stop_token_ids' one request may give")

    def __post_init__(self) -> None:
        require(self.max_request_bytes >= 1024,
                f"--max-request-bytes must be >= 1024, got {self.max_request_bytes}")
        require(self.max_stop_strings >= 0, f"--max-stop-strings must be >= 0, got {self.max_stop_strings}")
        require(self.max_stop_string_chars >= 1,
                f"--max-stop-string-chars must be >= 1, got {self.max_stop_string_chars}")
        require(self.max_stop_token_ids >= 0,
                f"--max-stop-token-ids must be >= 0, got {self.max_stop_token_ids}")
