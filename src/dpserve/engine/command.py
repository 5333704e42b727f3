"""`dpserve engine`: one built-in replica — resolve the model, build the engine, serve OpenAI HTTP."""

from __future__ import annotations

import logging

from dpserve.config import CommonOptions, ConfigError
from dpserve.engine.config import EngineConfig

CONFIG_CLASS = EngineConfig

logger = logging.getLogger(__name__)


def run(config: EngineConfig, common: CommonOptions) -> int:
    """Blocking: serve until SIGINT/SIGTERM. Heavy imports (torch, transformers) happen here."""
    from dpserve.engine.async_engine import AsyncEngine
    from dpserve.http_server import run_app
    from dpserve.model_store import resolve_model
    from dpserve.model_store.resolver import ModelNotFoundError
    from dpserve.serving.app import create_replica_app
    from dpserve.serving.sampling_defaults import load_sampling_defaults

    try:
        resolved = resolve_model(config.model)
    except ModelNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was given but torch sees no CUDA device")
    served_name = config.served_model_name or config.model
    defaults = load_sampling_defaults(config.generation_config, resolved.path)
    client = AsyncEngine(config, resolved.path)
    logger.info("serving %s from %s on %s (%s), max_model_len %d", served_name, resolved.path,
                config.device, config.dtype, client.max_model_len)
    app = create_replica_app(client, served_name, limits=config.limits, sampling_defaults=defaults)
    run_app(app, config.host, config.port)
    return 1 if client.core_died else 0  # a crash is a failure to the supervisor, not a clean stop
