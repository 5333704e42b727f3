"""Model discovery against a replica whose /v1/models or /metrics answer cannot be trusted (real
sockets on 127.0.0.1, as test_loads.py): the answer is read capped (http_body), a bad one counts
as that replica's failed fetch, and a good replica beside it is read as usual."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dpserve.gateway.circuit_breaker import CircuitBreaker
from dpserve.gateway.config import BreakerConfig
from dpserve.gateway.served_models import ModelDiscovery
from dpserve.gateway.worker import Worker
from tests.unit.gateway.fakes import FakeClock

CARD = {"id": "m", "root": "/models/m", "max_model_len": 4096}
PAST_THE_CAP = 20 * 2**20  # http_body.MAX_BODY_BYTES is 8 MiB


def _info(cache_dtype: str) -> bytes:
    return b'vllm:cache_config_info{block_size="16",cache_dtype="%s"} 1\n' % cache_dtype.encode()


def _gzip_bomb(body: bytes) -> web.Response:
    """`body` padded past the cap: ~20 KiB on the wire, 20 MiB once inflated."""
    return web.Response(body=gzip.compress(body + b"#" * PAST_THE_CAP), headers={"Content-Encoding": "gzip"})


def _models(mode: str) -> web.Response:
    if mode == "gzip-bomb":  # valid JSON once inflated: only the cap stops it being used
        return web.Response(body=gzip.compress(orjson.dumps({"data": [CARD], "pad": "0" * PAST_THE_CAP})),
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    if mode == "too-large":
        return web.Response(body=orjson.dumps({"data": [CARD], "pad": "0" * PAST_THE_CAP}),
                            content_type="application/json")
    if mode == "not-utf8":
        return web.Response(body=b'{"data":[{"id":"m\xff"}]}', content_type="application/json")
    return web.Response(body=orjson.dumps({"data": [CARD]}), content_type="application/json")


def _metrics(mode: str) -> web.Response:
    if mode == "gzip-bomb":
        return _gzip_bomb(_info("auto"))
    if mode == "not-utf8":  # a stray byte on another line: the info gauge is still there to compare
        return web.Response(body=_info("fp8") + b"# HELP other \xff\xfe\n",
                            headers={"Content-Type": "text/plain; charset=utf-8"})
    return web.Response(body=_info("auto"), headers={"Content-Type": "text/plain; charset=utf-8"})


Replica = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def replica() -> AsyncIterator[Replica]:
    """A replica serving /v1/models and /metrics in the given modes, as a Worker pointing at it."""
    servers: list[TestServer] = []

    async def start(name: str, models: str = "good", metrics: str = "good") -> Worker:
        async def models_route(request: web.Request) -> web.Response:
            return _models(models)

        async def metrics_route(request: web.Request) -> web.Response:
            return _metrics(metrics)

        app = web.Application()
        app.router.add_get("/v1/models", models_route)
        app.router.add_get("/metrics", metrics_route)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        breaker = CircuitBreaker(BreakerConfig(), FakeClock())
        return Worker(name, f"http://127.0.0.1:{server.port}", 1.0, breaker)

    yield start
    for server in servers:
        await server.close()


async def _discover(workers: list[Worker], **session: Any) -> None:
    """Each worker joins in turn (the gateway's refresh), checked against the ones before it."""
    async with aiohttp.ClientSession(**session) as http:
        discovery = ModelDiscovery(http, 5.0, peers=lambda: workers)
        for w in workers:
            await discovery.refresh(w)
        await discovery.stop()


@pytest.mark.parametrize(("mode", "session", "reason"), [
    ("gzip-bomb", {}, "larger than 8 MiB"),                           # inflated by the client
    ("too-large", {"auto_decompress": False}, "larger than 8 MiB"),   # the gateway's own session
    ("not-utf8", {}, "not valid UTF-8"),
])
async def test_a_models_answer_that_cannot_be_read_leaves_its_models_unknown(
        replica: Replica, caplog: pytest.LogCaptureFixture, mode: str, session: dict[str, Any],
        reason: str) -> None:
    """As if the replica had not answered: no cards, nothing compared, and the reason logged (was:
    a 20 MiB answer read whole and its cards taken; a non-UTF-8 one already failed, unexplained)."""
    good, bad, after = await replica("good"), await replica("bad", models=mode), await replica("after")
    with caplog.at_level(logging.WARNING, logger="dpserve.gateway.served_models"):
        await _discover([good, bad, after], **session)
    assert bad.models is None and bad.model_cards == () and bad.identity is None and bad.refused is None
    [logged] = [r.getMessage() for r in caplog.records]  # one line, about the bad replica
    assert logged.startswith(f"{bad.url}/v1/models is unusable (") and reason in logged
    assert logged.endswith("its models stay unknown")
    for w in (good, after):
        assert w.models == frozenset({"m"}) and w.refused is None
        assert w.identity == {"m": {"root": "/models/m", "max_model_len": "4096", "cache_dtype": "auto"}}


async def test_a_metrics_answer_past_the_cap_leaves_its_info_labels_uncompared(
        replica: Replica, caplog: pytest.LogCaptureFixture) -> None:
    """As if /metrics had not answered: its cards' facts are compared, its info labels are not
    (was: 20 MiB inflated and read whole)."""
    good, bad = await replica("good"), await replica("bad", metrics="gzip-bomb")
    with caplog.at_level(logging.WARNING, logger="dpserve.gateway.served_models"):
        await _discover([good, bad])
    assert bad.models == frozenset({"m"}) and bad.refused is None
    assert bad.identity == {"m": {"root": "/models/m", "max_model_len": "4096"}}
    assert f"{bad.url}/metrics is unusable (the answer is larger than 8 MiB)" in caplog.text
    assert good.identity == {"m": {"root": "/models/m", "max_model_len": "4096", "cache_dtype": "auto"}}


async def test_a_stray_byte_in_metrics_does_not_hide_a_differing_replica(replica: Replica) -> None:
    """Decoded with replacement, as the load poller does: the info gauge is still read, and the
    fp8 replica is refused (was: UnicodeDecodeError, labels {}, and the fp8 replica let in)."""
    good, fp8 = await replica("good"), await replica("fp8", metrics="not-utf8")
    await _discover([good, fp8])
    assert fp8.refused == "serves 'm' unlike good: cache_dtype fp8 ≠ auto"
    assert good.refused is None and good.models == frozenset({"m"})


@asynccontextmanager
async def models_replica(name: str, route: Callable[[web.Request], Awaitable[web.Response]]
                         ) -> AsyncIterator[Worker]:
    """A replica whose /v1/models is answered by `route`, as a Worker pointing at it."""
    app = web.Application()
    app.router.add_get("/v1/models", route)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        breaker = CircuitBreaker(BreakerConfig(), FakeClock())
        yield Worker(name, f"http://127.0.0.1:{server.port}", 1.0, breaker)
    finally:
        await server.close()


async def test_concurrent_refreshes_of_one_worker_share_one_fetch(caplog: pytest.LogCaptureFixture) -> None:
    """Every client GET /v1/models refreshes the workers whose models are unknown: 32 at once read
    a bad replica's answer once (was: 32 bodies of up to 8 MiB held at once), and warn once."""
    served = 0

    async def models_route(request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        await asyncio.sleep(0.05)  # the 32 calls all arrive while this one is answered
        return _models("too-large")

    async with models_replica("bad", models_route) as bad, \
            aiohttp.ClientSession(auto_decompress=False) as http:
        discovery = ModelDiscovery(http, 5.0, peers=lambda: [bad])
        with caplog.at_level(logging.WARNING, logger="dpserve.gateway.served_models"):
            await asyncio.gather(*(discovery.refresh_unknown([bad]) for _ in range(32)))
            assert served == 1
            await discovery.refresh_unknown([bad])  # a later call: a fetch of its own
        await discovery.stop()
    assert served == 2 and bad.models is None
    assert len([r for r in caplog.records if "unusable" in r.getMessage()]) == 1  # then throttled


async def test_a_refresh_asked_anew_during_a_fetch_reads_the_replica_again() -> None:
    """A replica that restarts while a fetch of its models runs: the refresh its coming back up
    asks for must not join that fetch, which may have read the old process (was: the old list
    kept until the next restart). A plain refresh joins it."""
    served = 0
    model = {"id": "old"}

    async def models_route(request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        answer = dict(model)  # what the process that got the request serves
        await asyncio.sleep(0.2)
        return web.Response(body=orjson.dumps({"data": [answer]}), content_type="application/json")

    async with models_replica("w", models_route) as worker, aiohttp.ClientSession() as http:
        discovery = ModelDiscovery(http, 5.0)
        first = asyncio.ensure_future(discovery.refresh(worker))
        await asyncio.sleep(0.05)  # the first fetch is under way
        model["id"] = "new"  # the replica restarted, serving another model
        await asyncio.gather(first, discovery.refresh(worker), discovery.refresh(worker, anew=True))
        await discovery.stop()
    assert served == 2 and worker.models == frozenset({"new"})
