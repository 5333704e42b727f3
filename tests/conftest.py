"""Shared fixtures: the bundled model (converted once per cache dir) and free ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """HF-format directory of the bundled SmolLM2-135M (converted on first use, then cached)."""
    from dpserve.model_store import resolve_model

    return resolve_model("smollm2-135m").path
