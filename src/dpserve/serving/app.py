"""The replica app factory: OpenAI endpoints + /health + /metrics over one EngineClient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from dpserve.errors import error_middleware
from dpserve.http_names import CHAT_PATH, COMPLETIONS_PATH, HEALTH_PATH, METRICS_PATH, MODELS_PATH
from dpserve.serving.engine_client import EngineClient
from dpserve.serving.handlers import ReplicaHandlers
from dpserve.serving.metrics import ReplicaMetrics

HANDLERS_KEY = web.AppKey("replica_handlers", ReplicaHandlers)

# Requests carry whole conversations; aiohttp's 1 MiB default is too small for long prompts.
DEFAULT_CLIENT_MAX_SIZE = 64 * 1024 * 1024


def create_replica_app(client: EngineClient, served_model_name: str, *,
                       middlewares: Sequence[Any] = (),
                       client_max_size: int = DEFAULT_CLIENT_MAX_SIZE) -> web.Application:
    """An aiohttp app serving `client` as `served_model_name`.

    `client.start()` is awaited on app startup (/health answers 200 after it) and `client.stop()`
    on cleanup. Extra `middlewares` run inside the JSON error middleware (the sim's fault knobs).
    """
    app = web.Application(middlewares=[error_middleware, *middlewares], client_max_size=client_max_size)
    handlers = ReplicaHandlers(client, served_model_name, ReplicaMetrics(served_model_name))
    app[HANDLERS_KEY] = handlers

    async def on_startup(_app: web.Application) -> None:
        await client.start()
        await handlers.disconnects.start()
        handlers.is_ready = True

    async def on_cleanup(_app: web.Application) -> None:
        handlers.is_ready = False
        await handlers.disconnects.stop()
        handlers.close()
        await client.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get(HEALTH_PATH, handlers.health)
    app.router.add_get(MODELS_PATH, handlers.models)
    app.router.add_get(METRICS_PATH, handlers.metrics_text)
    app.router.add_post(CHAT_PATH, handlers.chat_completions)
    app.router.add_post(COMPLETIONS_PATH, handlers.completions)
    return app
