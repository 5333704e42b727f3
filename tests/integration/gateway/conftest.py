"""Fixtures for gateway integration tests: fake replicas and an in-process gateway on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from dpserve.config import build_config
from dpserve.gateway.app import Gateway, build_app
from dpserve.gateway.config import GatewayConfig
from dpserve.gateway.server import GatewayServer
from dpserve.http_server import bind_socket
from tests.conftest import free_port
from tests.integration.gateway.fake_worker import FakeWorker

# Short intervals so every scenario settles in well under a second or two.
FAST = {"health_check_interval_s": 0.1, "health_check_timeout_s": 0.3, "load_poll_interval_s": 0.1,
        "retry_backoff_base_s": 0.001, "retry_backoff_max_s": 0.01, "breaker_cooldown_s": 0.3,
        "drain_timeout_s": 5.0, "seed": 1234}


class RunningGateway:
    def __init__(self, server: GatewayServer, port: int) -> None:
        self.server = server
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def state(self) -> Gateway:
        return self.server.gateway


@pytest.fixture
async def fake_workers() -> AsyncIterator[Callable[..., Awaitable[list[FakeWorker]]]]:
    started: list[FakeWorker] = []

    async def make(n: int, **knobs: Any) -> list[FakeWorker]:
        workers = [FakeWorker(**knobs) for _ in range(n)]
        for w in workers:
            await w.start()
        started.extend(workers)
        return workers

    yield make
    for w in started:
        await w.stop()


@pytest.fixture
async def gateway() -> AsyncIterator[Callable[..., Awaitable[RunningGateway]]]:
    servers: list[GatewayServer] = []

    async def make(workers: list[FakeWorker], *, link_key: str | None = None, **flags: Any) -> RunningGateway:
        values = {**FAST, **flags, "worker_urls": tuple(w.url for w in workers)}
        config = build_config(GatewayConfig, values)
        server = build_app(config, link_key=link_key)
        sock = bind_socket("127.0.0.1", 0)
        await server.start(sock)
        servers.append(server)
        return RunningGateway(server, sock.getsockname()[1])

    yield make
    for s in servers:
        await s.stop(5.0)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def chat(content: str = "hi", *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": content}], "stream": stream,
            **extra}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every gateway scenario is bounded: seconds, not the suite's default minutes."""
    for item in items:
        if "integration/gateway" in str(item.path) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(60))


async def wait_router_ready(url: str, proc: asyncio.subprocess.Process, timeout_s: float = 20.0) -> None:
    """Poll a `dpserve router` process's /readiness until 200; fail if it exits first."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as client:
        while time.monotonic() < deadline:
            assert proc.returncode is None, "router exited early"
            try:
                async with client.get(url + "/readiness") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError("router not ready")


async def start_router_process(*worker_urls: str) -> tuple[asyncio.subprocess.Process, str]:
    """`dpserve router` in its own process group in front of `worker_urls`, ready; (process, base URL).

    A 5 s shutdown grace, so SIGTERM tests see in-flight streams finish. The caller stops it."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dpserve", "router", "--port", str(port), "--worker-urls", *worker_urls,
        "--shutdown-grace-s", "5", "--log-level", "warning", start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_router_ready(url, proc)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, url


async def eventually(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Poll `condition` every 10 ms until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
