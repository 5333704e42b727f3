"""A fake gateway and its replicas for `plan --diagnose` tests: one aiohttp app on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.test_utils import TestServer


@contextlib.asynccontextmanager
async def serving(workers: web.RequestHandler, metrics: web.RequestHandler,
                  prefix: str = "") -> AsyncIterator[str]:
    """`GET {prefix}/workers` and `GET {prefix}/{replica}/metrics` served on a free port; yields its URL."""
    app = web.Application()
    app.router.add_get(f"{prefix}/workers", workers)
    app.router.add_get(f"{prefix}/{{replica}}/metrics", metrics)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()
