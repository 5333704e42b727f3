"""Sending one batch request to one replica and classifying what came back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from dpserve.http_names import HEALTH_PATH
from dpserve.offline.records import BatchRequest

# 408/429 and 5xx may succeed elsewhere or later; other 4xx are the request's own fault.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Outcome:
    """One attempt: the reply (if any), whether to retry, and whether the replica looks dead."""

    status_code: int | None
    body: Any
    request_id: str | None
    error: str | None  # None on success
    is_retryable: bool = False
    replica_unreachable: bool = False

    @property
    def is_success(self) -> bool:
        return self.error is None


def _from_reply(status: int, raw: bytes, request_id: str | None) -> Outcome:
    try:
        body: Any = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = raw.decode(errors="replace")
    if 200 <= status < 300 and isinstance(body, dict):
        return Outcome(status, body, request_id, None)
    if 200 <= status < 300:
        return Outcome(status, body, request_id, "replica answered 2xx without a JSON object",
                       is_retryable=True)
    message = f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message += f": {body['error'].get('message', '')}"
    return Outcome(status, body, request_id, message, is_retryable=status in RETRYABLE_STATUSES)


async def send(session: aiohttp.ClientSession, base_url: str, request: BatchRequest,
               timeout_s: float) -> Outcome:
    """POST the request body to base_url + request.url; never raises for network trouble."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.post(base_url + request.url, data=orjson.dumps(request.body),
                                headers={"content-type": "application/json",
                                         "x-request-id": request.custom_id},
                                timeout=timeout) as resp:
            raw = await resp.read()
            return _from_reply(resp.status, raw, resp.headers.get("x-request-id"))
    except TimeoutError:  # before ClientConnectionError: aiohttp's timeouts subclass both
        return Outcome(None, None, None, f"no reply within {timeout_s}s", is_retryable=True)
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        return Outcome(None, None, None, f"replica unreachable: {exc!r}", is_retryable=True,
                       replica_unreachable=True)
    except aiohttp.ClientError as exc:
        return Outcome(None, None, None, f"client error: {exc!r}", is_retryable=True)


async def is_healthy(session: aiohttp.ClientSession, base_url: str, timeout_s: float = 2.0) -> bool:
    """GET /health answers 200."""
    try:
        async with session.get(base_url + HEALTH_PATH,
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError):
        return False
