"""Backend registry: name → the module that implements it, imported only when chosen."""

from __future__ import annotations

import importlib

from dpserve.launcher.backends.base import Backend, ReplicaSpec

# name → (module, class). The only list of backends; CLI choices come from it.
_REGISTRY: dict[str, tuple[str, str]] = {
    "builtin": ("dpserve.launcher.backends.builtin", "BuiltinBackend"),
    "vllm": ("dpserve.launcher.backends.vllm", "VllmBackend"),
    "sglang": ("dpserve.launcher.backends.sglang", "SglangBackend"),
    "sim": ("dpserve.launcher.backends.sim", "SimBackend"),
}

BACKEND_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get_backend(name: str) -> Backend:
    """A new instance of the backend called `name`; unknown names list the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKEND_NAMES)}")
    module_name, class_name = _REGISTRY[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls()
    return backend


__all__ = ["BACKEND_NAMES", "Backend", "ReplicaSpec", "get_backend"]
