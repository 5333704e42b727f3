"""OpenAI-style error bodies: {"error": {"message", "type", "code"}} — one shape for every server."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    414: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "internal_error",
    502: "upstream_error",
    503: "service_unavailable_error",
    504: "timeout_error",
    505: "invalid_request_error",
    508: "upstream_error",
}


class HTTPError(Exception):
    """Raise anywhere in a handler to answer `status` with an OpenAI-style JSON error."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


def error_body(status: int, message: str, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message, "type": _TYPES.get(status, "error"),
                           "code": code if code is not None else status}
    if param is not None:
        err["param"] = param
    return {"error": err}


def error_response(status: int, message: str, *, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(error_body(status, message, code, param)),
                        content_type="application/json", headers=headers)


def http_error_response(exc: HTTPError) -> web.Response:
    return error_response(exc.status, exc.message, code=exc.code, param=exc.param,
                          headers=exc.headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """HTTPError → its JSON; aiohttp's own 404/405 → JSON; anything unexpected → JSON 500 + log."""
    try:
        return await handler(request)
    except HTTPError as exc:
        return http_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason or "error",
                              headers={k: v for k, v in exc.headers.items()
                                       if k.lower() in ("allow", "retry-after")})
