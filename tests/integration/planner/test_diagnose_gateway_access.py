"""--diagnose reads /workers with the admin key as a bearer token, and fails clearly without it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from dpserve.cli import main
from dpserve.config import ConfigError
from dpserve.diagnosis import State
from dpserve.planner.diagnose import FleetUnreachable, diagnose_url
from tests.integration.planner.fake_fleet import serving

METRICS = ('vllm:num_requests_running 2\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.1\n'
           'vllm:generation_tokens_total {n}\n')


@pytest.fixture
async def fleet() -> AsyncIterator[str]:
    """A fake gateway whose /workers needs `Bearer k`, listing one fake replica on the same server."""
    scrapes = {"n": 0}

    async def workers(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer k":
            raise web.HTTPUnauthorized()
        base = f"http://127.0.0.1:{request.url.port}"
        return web.json_response([{"id": "r0", "url": base + "/r0", "healthy": True}])

    async def metrics(request: web.Request) -> web.Response:
        scrapes["n"] += 1
        return web.Response(text=METRICS.format(n=100 * scrapes["n"]))

    async with serving(workers, metrics) as url:
        yield url


async def test_admin_key_is_sent_and_required(fleet: str) -> None:
    d, windows = await diagnose_url(fleet, admin_key="k", window_s=0.2, scrapes=3)
    assert d.fleet.state is State.OK and windows[0].running == 2.0
    assert windows[0].generation_tokens_per_s > 0
    with pytest.raises(ConfigError, match="needs the admin key"):
        await diagnose_url(fleet, admin_key=None, window_s=0.2, scrapes=2)


async def test_unreachable_gateway() -> None:
    with pytest.raises(FleetUnreachable, match=r"cannot read http://127\.0\.0\.1:9/workers"):
        await diagnose_url("http://127.0.0.1:9", admin_key=None, window_s=0.1, scrapes=2)


def test_cli_reports_an_unreachable_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--diagnose", "http://127.0.0.1:9", "--window-s", "0.1", "--scrapes", "2"]) == 1
    err = capsys.readouterr().err
    assert "cannot read http://127.0.0.1:9/workers" in err and "Traceback" not in err
