"""Run a server (an aiohttp app, or the gateway's own) on uvloop until SIGINT/SIGTERM, with a
graceful shutdown window."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from aiohttp import web

from dpserve.config import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")


def install_uvloop() -> None:
    """uvloop for every later event loop of this process: only for a process of its own (the
    benchmark scripts); commands use `run_on_uvloop`."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        pass


def run_on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on a uvloop event loop, without changing the process's loop policy
    (commands also run inside tests, where a global policy would leak into every later test)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket with TCP_NODELAY set, so small SSE chunks are never Nagle-delayed."""
    sock = socket.create_server((host, port), reuse_port=False, backlog=2048)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Server(Protocol):
    """What `serve_app` runs: the gateway's `GatewayServer`, or an aiohttp app (`AiohttpServer`)."""

    async def start(self, sock: socket.socket) -> None:
        """Start (startup work first), then accept connections on `sock`."""

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, give in-flight requests `grace_s` to finish, then clean up."""


class AiohttpServer:
    """An aiohttp app as a `Server` (the replicas' servers)."""

    def __init__(self, app: web.Application, shutdown_grace_s: float) -> None:
        # The runner's shutdown_timeout gives in-flight requests the grace to finish.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_grace_s,
                                     handle_signals=False)

    async def start(self, sock: socket.socket) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self, grace_s: float) -> None:
        await self._runner.cleanup()


async def serve_app(app: web.Application | Server, host: str, port: int, *, shutdown_grace_s: float = 5.0,
                    on_ready: Callable[[int], Awaitable[None] | None] | None = None,
                    stop_event: asyncio.Event | None = None) -> None:
    """Serve `app` on host:port until SIGINT/SIGTERM (or `stop_event`), then shut down cleanly,
    giving in-flight requests `shutdown_grace_s` to finish."""
    # Bind before setup: startup hooks may load a model, which is wasted if the port is taken.
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc} "
                          "(choose another --port)") from exc
    server = AiohttpServer(app, shutdown_grace_s) if isinstance(app, web.Application) else app
    try:
        await server.start(sock)
    except BaseException:
        sock.close()
        raise
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
        await server.stop(shutdown_grace_s)


def run_app(app: web.Application | Server, host: str, port: int, *, shutdown_grace_s: float = 5.0) -> None:
    """Blocking entry point for commands: uvloop + serve_app."""
    run_on_uvloop(serve_app(app, host, port, shutdown_grace_s=shutdown_grace_s))
