"""Model store: turns `--model NAME_OR_PATH` into a local HF-format directory."""

from dpserve.model_store.resolver import ModelNotFoundError, ResolvedModel, resolve_model

__all__ = ["ModelNotFoundError", "ResolvedModel", "resolve_model"]
