"""Run an aiohttp app on uvloop until SIGINT/SIGTERM, with a graceful shutdown window."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from dpserve.config import ConfigError

logger = logging.getLogger(__name__)


def install_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        pass


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket with TCP_NODELAY set, so small SSE chunks are never Nagle-delayed."""
    sock = socket.create_server((host, port), reuse_port=False, backlog=2048)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def serve_app(app: web.Application, host: str, port: int, *, shutdown_grace_s: float = 5.0,
                    on_ready: Callable[[int], Awaitable[None] | None] | None = None,
                    stop_event: asyncio.Event | None = None) -> None:
    """Serve `app` on host:port until SIGINT/SIGTERM (or `stop_event`), then shut down cleanly.

    The runner's shutdown_timeout gives in-flight requests `shutdown_grace_s` to finish.
    """
    # Bind before setup: startup hooks may load a model, which is wasted if the port is taken.
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc} "
                          "(choose another --port)") from exc
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_grace_s,
                           handle_signals=False)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    bound_port = sock.getsockname()[1]
    logger.info("listening on http://%s:%d", host, bound_port)
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        result = on_ready(bound_port)
        if asyncio.iscoroutine(result):
            await result
    try:
        await stop.wait()
    finally:
        logger.info("shutting down")
        await runner.cleanup()


def run_app(app: web.Application, host: str, port: int, *, shutdown_grace_s: float = 5.0) -> None:
    """Blocking entry point for commands: uvloop + serve_app."""
    install_uvloop()
    asyncio.run(serve_app(app, host, port, shutdown_grace_s=shutdown_grace_s))
