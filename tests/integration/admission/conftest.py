"""Fixtures for admission integration tests: a real redis-server and an API key file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .redis_server import RedisServer

KEYS = """
keys:
  - {key: k-limited, tenant: limited, requests_per_minute: 30}
  - {key: k-limited-2, tenant: limited, requests_per_minute: 30}
  - {key: k-busy, tenant: busy, requests_per_minute: 5, max_concurrency: 3}
  - {key: k-free, tenant: free, requests_per_minute: 100000}
  - {key: k-tokens, tenant: tokens, tokens_per_minute: 100}
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(KEYS)
    return path
