"""Request bodies under `--max-request-bytes`: refused before they are read, never buffered past it.

An announced Content-Length above the limit gets a 413 at once (and a client that sent
`Expect: 100-continue` never sends the body); a chunked body is cut off with a 413 as soon as it
passes the limit. aiohttp's own `client_max_size` check only fires after buffering that much.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from dpserve.errors import HTTPError, http_error_response


def _too_large(max_bytes: int, size: int | None = None) -> HTTPError:
    said = f"{size} bytes" if size is not None else "larger"
    return HTTPError(413, f"request body is {said}; this replica accepts at most {max_bytes} bytes "
                     "(--max-request-bytes)", code="request_too_large",
                     headers={hdrs.CONNECTION: "close"})


def check_announced_size(request: web.Request, max_bytes: int) -> None:
    """413 (HTTPError) when Content-Length announces more than `max_bytes`."""
    size = request.content_length
    if size is not None and size > max_bytes:
        raise _too_large(max_bytes, size)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole body, or a 413 HTTPError as soon as it is known to exceed `max_bytes`."""
    check_announced_size(request, max_bytes)
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    return bytes(body)


def expect_handler(max_bytes: int) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """aiohttp `expect_handler` for `Expect: 100-continue`: a 413 instead of "100 Continue" when the
    announced body is over the limit, so the client does not send it at all."""

    async def handle(request: web.Request) -> web.StreamResponse | None:
        if request.version < (1, 1):
            return None  # HTTP/1.0 has no 100 Continue
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            return http_error_response(HTTPError(417, "only 'Expect: 100-continue' is supported"))
        try:
            check_announced_size(request, max_bytes)
        except HTTPError as exc:
            return http_error_response(exc)
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim response is not part of the real one
        return None

    return handle
