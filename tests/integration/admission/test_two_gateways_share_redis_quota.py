"""Two real `dpserve router` processes on one Redis: one tenant limit for both, 401s, other tenants free."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.support import dpserve_process, wait_http_ok

from .redis_server import RedisServer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("dpserve.gateway.command") is None
    or importlib.util.find_spec("dpserve.sim.command") is None,
    reason="needs the gateway (dpserve router) and dpserve sim")

KEYS = """
keys:
  - {key: k-capped, tenant: capped, requests_per_minute: 10}
  - {key: k-other, tenant: other}
  - {key: k-tokens, tenant: wordy, tokens_per_minute: 30}
"""
BODY = {"model": "smollm2-135m", "prompt": "hi", "max_tokens": 2}


@pytest.fixture
def gateway_urls(tmp_path: Path, redis_server: RedisServer) -> Iterator[list[str]]:
    keys = tmp_path / "gw-keys.yaml"
    keys.write_text(KEYS)
    with ExitStack() as stack:
        sim_port = free_port()
        stack.enter_context(dpserve_process(["sim", "--port", str(sim_port)], sim_port,
                                            log_path=tmp_path / "sim.log"))
        urls = []
        for i in range(2):
            port = free_port()
            proc = stack.enter_context(dpserve_process(
                ["router", "--port", str(port), "--worker-urls", f"http://127.0.0.1:{sim_port}",
                 "--api-keys", str(keys), "--redis-url", redis_server.url], port,
                log_path=tmp_path / f"gateway{i}.log"))
            wait_http_ok(f"http://127.0.0.1:{port}/readiness", 60.0, proc)
            urls.append(f"http://127.0.0.1:{port}")
        yield urls


async def _post(session: aiohttp.ClientSession, url: str, key: str | None) -> tuple[int, dict[str, str]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with session.post(f"{url}/v1/completions", json=BODY, headers=headers) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


async def test_two_gateways_enforce_one_requests_per_minute(gateway_urls: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        assert (await _post(session, gateway_urls[0], None))[0] == 401
        assert (await _post(session, gateway_urls[1], "k-wrong"))[0] == 401
        capped: list[int] = []
        for i in range(30):
            status, headers = await _post(session, gateway_urls[i % 2], "k-capped")
            capped.append(status)
            assert status in (200, 429)
            assert status == 200 or int(headers["Retry-After"]) >= 1
            # The tenant at its limit does not hold back another tenant on either gateway.
            assert (await _post(session, gateway_urls[(i + 1) % 2], "k-other"))[0] == 200
        async with session.get(f"{gateway_urls[0]}/metrics") as resp:
            metrics = await resp.text()
    # 10 per minute for both gateways together (+1 for refill while the loop runs), not 20.
    assert 10 <= capped.count(200) <= 11, capped
    assert 'dpserve_quota_backend_up{backend="redis"} 1' in metrics
    assert 'reason="requests_per_minute",tenant="capped"' in metrics


async def test_tokens_per_minute_uses_reported_usage_across_gateways(gateway_urls: list[str]) -> None:
    statuses = []
    async with aiohttp.ClientSession() as session:
        for i in range(12):  # each request: a short prompt + 2 completion tokens, charged when it ends
            status, headers = await _post(session, gateway_urls[i % 2], "k-tokens")
            statuses.append((status, headers.get("Retry-After")))
        metrics = ""
        for url in gateway_urls:
            async with session.get(f"{url}/metrics") as resp:
                metrics += await resp.text()
    assert statuses[0][0] == 200
    assert any(status == 429 for status, _ in statuses), statuses  # 12 requests use more than 30 tokens
    assert all(int(retry) >= 1 for status, retry in statuses if status == 429 and retry is not None)
    assert 'reason="tokens_per_minute",tenant="wordy"' in metrics
    # the refusals came only after the tenant's usage had been charged, on whichever gateway served it
    first_refused = next(i for i, (status, _) in enumerate(statuses) if status == 429)
    assert 'dpserve_tenant_tokens_total{tenant="wordy",kind="completion"}' in metrics and first_refused >= 2
