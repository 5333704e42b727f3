"""Issue 14 on three `dpserve sim` processes: SIGKILL of a replica under 32 concurrent streams
costs no client an error and every stream its exact token count; a SIGSTOPped replica's stream
resumes elsewhere within the stall timeout; a drain past its timeout moves streams on."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from dpserve.http_names import CHAT_PATH, COMPLETIONS_PATH, METRICS_PATH, WORKER_HEADER, WORKERS_PATH
from tests.integration.gateway.replica_fleet import Replica, replica_fleet

pytestmark = pytest.mark.timeout(120)

ALIAS = "gpt-sim"
SERVED = "smollm2-135m"


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    # Half real time (~18 ms steps at 32 streams): streams last a second or two, long enough to cut.
    args = ["--time-scale", "0.5", "--served-model-name", SERVED]
    with replica_fleet(3, "sim", args, tmp_path_factory.mktemp("sims")) as replicas:
        yield replicas


def _workers(replicas: list[Replica]) -> list[SimpleNamespace]:
    return [SimpleNamespace(url=r.url) for r in replicas]


def _body(i: int) -> tuple[str, dict[str, Any]]:
    """Stream i: chat or completions, usage or not, alias or served name; its own length."""
    body: dict[str, Any] = {"model": ALIAS if i & 4 else SERVED, "stream": True, "max_tokens": 40 + i,
                            "ignore_eos": True, "temperature": 0}
    if i & 2:
        body["stream_options"] = {"include_usage": True}
    if i & 1:
        return COMPLETIONS_PATH, {**body, "prompt": f"story number {i} begins"}
    return CHAT_PATH, {**body, "messages": [{"role": "user", "content": f"story {i}"}]}


class StreamResult:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.done = False
        self.worker: str | None = None
        self.arrivals: list[float] = []

    @property
    def text(self) -> str:
        return "".join((c.get("delta") or {}).get("content") or c.get("text") or ""
                       for e in self.events for c in e.get("choices", []))


async def _read(client: aiohttp.ClientSession, url: str, path: str, body: dict[str, Any],
                out: StreamResult) -> StreamResult:
    async with client.post(url + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        out.worker = resp.headers[WORKER_HEADER]
        async for line in resp.content:
            if line.strip() == b"data: [DONE]":
                out.done = True
            elif line.startswith(b"data: "):
                out.events.append(json.loads(line[6:]))
                out.arrivals.append(time.monotonic())
    return out


def _check(result: StreamResult, body: dict[str, Any]) -> None:
    assert result.done and not any("error" in e for e in result.events)
    assert len(result.text.split()) == body["max_tokens"]  # one filler word per sim token
    assert {e["model"] for e in result.events} == {body["model"]}
    assert len({e["id"] for e in result.events}) == 1
    roles = [c for e in result.events for c in e.get("choices", []) if "role" in (c.get("delta") or {})]
    assert len(roles) <= 1
    if "stream_options" in body:
        assert result.events[-1]["usage"]["completion_tokens"] == body["max_tokens"]


async def _metrics(client: aiohttp.ClientSession, url: str) -> str:
    async with client.get(url + METRICS_PATH) as resp:
        return await resp.text()


async def _when(condition: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_drain_past_its_timeout_moves_streams_to_finish_elsewhere(sims, gateway) -> None:
    gw = await gateway(_workers(sims), policy="round_robin", drain_timeout_s=0.3,
                       model_aliases=(f"{ALIAS}={SERVED}",))
    results = [StreamResult() for _ in range(6)]
    async with aiohttp.ClientSession() as client:
        tasks = [asyncio.create_task(_read(client, gw.url, *_body(i), results[i])) for i in range(6)]
        await _when(lambda: all(len(r.events) > 3 for r in results))
        async with client.delete(gw.url + WORKERS_PATH + "/w0") as resp:
            assert resp.status == 204
        await asyncio.gather(*tasks)
        for i, result in enumerate(results):
            _check(result, _body(i)[1])
        assert 'reason="drain",outcome="migrated"} 2' in await _metrics(client, gw.url)


async def test_a_sigstopped_replica_costs_its_stream_the_stall_timeout_plus_a_prefill(sims, gateway) -> None:
    stall_s = 1.0
    # Slow health checks, so that the stall (not health) is what moves the stream here.
    gw = await gateway(_workers(sims), policy="round_robin", stream_stall_timeout_s=stall_s,
                       health_check_interval_s=30, health_check_timeout_s=5)
    result = StreamResult()
    path, body = _body(0)
    body["max_tokens"] = 120
    async with aiohttp.ClientSession() as client:
        task = asyncio.create_task(_read(client, gw.url, path, body, result))
        await _when(lambda: len(result.events) > 10)
        victim = next(r for r in sims if r.url == gw.state.registry.get(result.worker).url)
        victim.signal(signal.SIGSTOP)
        try:
            await task
        finally:
            victim.signal(signal.SIGCONT)
        _check(result, body)
        gap = max(b - a for a, b in itertools.pairwise(result.arrivals))
        assert stall_s <= gap < stall_s + 1.5, gap  # detection (10 ms sweeps) + a prefill elsewhere
        assert 'reason="stall",outcome="migrated"} 1' in await _metrics(client, gw.url)


async def test_sigkill_under_32_streams_costs_no_client_anything(sims, gateway) -> None:
    gw = await gateway(_workers(sims), policy="round_robin", model_aliases=(f"{ALIAS}={SERVED}",))
    results = [StreamResult() for _ in range(32)]
    async with aiohttp.ClientSession() as client:
        tasks = [asyncio.create_task(_read(client, gw.url, *_body(i), results[i])) for i in range(32)]
        await _when(lambda: all(len(r.events) > 5 for r in results))
        victim = sims[0]
        victim.signal(signal.SIGKILL)
        await asyncio.gather(*tasks)
        assert victim.proc.wait(10) == -signal.SIGKILL
        for i, result in enumerate(results):
            _check(result, _body(i)[1])
        moved = sum(1 for r in results if r.worker == "w0")
        assert moved >= 8
        assert f'reason="upstream_error",outcome="migrated"}} {moved}' in await _metrics(client, gw.url)
