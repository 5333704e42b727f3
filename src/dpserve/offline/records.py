"""The batch file formats: an input request, and the output line (OpenAI batch output shape)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from dpserve.http_names import PROXIED_PATHS

ENDPOINTS = PROXIED_PATHS

# Error codes written in OUT's `error.code`; documented in docs/architecture.md (offline section).
INVALID_LINE = "invalid_input_line"
REQUEST_FAILED = "request_failed"


@dataclass(frozen=True)
class BatchRequest:
    """One valid input line: where it came from and what to send."""

    line_no: int
    custom_id: str
    url: str
    body: dict[str, Any]


def new_result_id() -> str:
    return f"batch_req_{uuid.uuid4().hex}"


def success_line(custom_id: str, status_code: int, body: Any, request_id: str) -> dict[str, Any]:
    """The line for a request a replica answered with 2xx."""
    return {"id": new_result_id(), "custom_id": custom_id,
            "response": {"status_code": status_code, "request_id": request_id, "body": body},
            "error": None}


def failure_line(custom_id: str, message: str, status_code: int | None = None, body: Any = None,
                 request_id: str | None = None) -> dict[str, Any]:
    """The line for a request that failed for good; `response` is the last reply, if any."""
    response = None
    if status_code is not None:
        response = {"status_code": status_code, "request_id": request_id, "body": body}
    return {"id": new_result_id(), "custom_id": custom_id, "response": response,
            "error": {"code": REQUEST_FAILED, "message": message}}


def invalid_line(line_no: int, custom_id: str | None, message: str) -> dict[str, Any]:
    """The line for a malformed input line; `error.line` lets --resume recognise it."""
    return {"id": new_result_id(), "custom_id": custom_id, "response": None,
            "error": {"code": INVALID_LINE, "message": f"line {line_no}: {message}", "line": line_no}}


def output_tokens(body: Any) -> int:
    """usage.completion_tokens of an OpenAI response body, 0 when absent."""
    if isinstance(body, dict):
        usage = body.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            return int(usage["completion_tokens"])
    return 0
