"""The replica app factory: OpenAI endpoints + /health + /metrics over one EngineClient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from dpserve.errors import error_middleware
from dpserve.http_names import CHAT_PATH, COMPLETIONS_PATH, HEALTH_PATH, METRICS_PATH, MODELS_PATH
from dpserve.serving.body import expect_handler
from dpserve.serving.engine_client import EngineClient
from dpserve.serving.handlers import ReplicaHandlers
from dpserve.serving.limits import RequestLimits
from dpserve.serving.metrics import ReplicaMetrics
from dpserve.serving.sampling_defaults import SamplingDefaults

HANDLERS_KEY = web.AppKey("replica_handlers", ReplicaHandlers)


def create_replica_app(client: EngineClient, served_model_name: str, *,
                       middlewares: Sequence[Any] = (), limits: RequestLimits | None = None,
                       sampling_defaults: SamplingDefaults | None = None) -> web.Application:
    """An aiohttp app serving `client` as `served_model_name`.

    `client.start()` is awaited on app startup (/health answers 200 after it) and `client.stop()`
    on cleanup. Extra `middlewares` run inside the JSON error middleware (the sim's fault knobs).
    `limits` bound each request (defaults: RequestLimits()); `sampling_defaults` fill the sampling
    fields a request leaves out (the model's generation config).
    """
    limits = limits or RequestLimits()
    app = web.Application(middlewares=[error_middleware, *middlewares],
                          client_max_size=limits.max_request_bytes)
    handlers = ReplicaHandlers(client, served_model_name, ReplicaMetrics(served_model_name), limits=limits,
                               sampling_defaults=sampling_defaults or SamplingDefaults())
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
    expect = expect_handler(limits.max_request_bytes)
    app.router.add_post(CHAT_PATH, handlers.chat_completions, expect_handler=expect)
    app.router.add_post(COMPLETIONS_PATH, handlers.completions, expect_handler=expect)
    return app
