"""Sim fixtures: a running `dpserve sim` per module, and helpers to read SSE and /metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import aiohttp
import pytest

from tests.conftest import free_port
from tests.support import dpserve_process

# Fast enough for tests, slow enough that streams have several steps.
TEST_TIME_SCALE = "20"

SimFactory = Callable[..., AbstractContextManager[str]]


@pytest.fixture(scope="module")
def start_sim(tmp_path_factory: pytest.TempPathFactory) -> SimFactory:
    """`with start_sim("--fail-first", "2") as url:` runs a sim with extra flags."""

    @contextmanager
    def run(*extra: str) -> Iterator[str]:
        port = free_port()
        log = tmp_path_factory.mktemp("sim") / "sim.log"
        args = ["sim", "--port", str(port), "--time-scale", TEST_TIME_SCALE, *extra]
        with dpserve_process(args, port, log_path=log, timeout_s=60):
            yield f"http://127.0.0.1:{port}"

    return run


@pytest.fixture(scope="module")
def sim_url(start_sim: SimFactory) -> Iterator[str]:
    with start_sim("--kv-cache-tokens", "65536", "--max-model-len", "4096") as url:
        yield url


async def read_sse(resp: aiohttp.ClientResponse) -> tuple[list[dict[str, Any]], bool]:
    """All `data: {...}` chunks of a stream, and whether it ended with `data: [DONE]`."""
    chunks, done = [], False
    async for raw in resp.content:
        line = raw.strip()
        if line == b"data: [DONE]":
            done = True
        elif line.startswith(b"data: "):
            chunks.append(json.loads(line[6:]))
    return chunks, done


async def metric(session: aiohttp.ClientSession, url: str, name: str, labels: str = "") -> float:
    async with session.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    pattern = rf'^{re.escape(name)}\{{model_name="[^"]*"{re.escape(labels)}\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))
