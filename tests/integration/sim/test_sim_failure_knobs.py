"""Each `dpserve sim` failure knob does what --help says, on a real process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request

import aiohttp
import pytest

from dpserve.sim.command import REFUSED_EXIT_CODE
from tests.conftest import free_port
from tests.integration.sim.conftest import SimFactory, read_sse
from tests.support import stop_process, wait_http_ok

pytestmark = pytest.mark.timeout(120)
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
STREAM = {**BODY, "max_tokens": 50, "stream": True}


async def status_of(session: aiohttp.ClientSession, url: str, body: dict = BODY) -> int:
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        await resp.read()
        return resp.status


async def test_fail_first(start_sim: SimFactory) -> None:
    with start_sim("--fail-first", "2") as url:
        async with aiohttp.ClientSession() as s:
            assert [await status_of(s, url) for _ in range(3)] == [503, 503, 200]
            async with s.get(f"{url}/health") as resp:
                assert resp.status == 200  # only completion requests count


async def test_fail_after(start_sim: SimFactory) -> None:
    with start_sim("--fail-after", "1") as url:
        async with aiohttp.ClientSession() as s:
            assert [await status_of(s, url) for _ in range(3)] == [200, 500, 500]
            async with s.post(f"{url}/v1/chat/completions", json=BODY) as resp:
                assert "--fail-after" in (await resp.json())["error"]["message"]


async def test_hang_after(start_sim: SimFactory) -> None:
    with start_sim("--hang-after", "1") as url:
        async with aiohttp.ClientSession() as s:
            assert await status_of(s, url) == 200
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(status_of(s, url), 1.0)
            async with s.get(f"{url}/health") as resp:
                assert resp.status == 200  # the process is alive, it just never answers


async def test_slow_first_byte(start_sim: SimFactory) -> None:
    with start_sim("--slow-first-byte-s", "0.6") as url:
        async with aiohttp.ClientSession() as s:
            loop = asyncio.get_running_loop()
            start = loop.time()
            assert await status_of(s, url) == 200
            assert loop.time() - start >= 0.6


async def test_refuse_after_exits(start_sim: SimFactory) -> None:
    with start_sim("--refuse-after", "2") as url:
        async with aiohttp.ClientSession() as s:
            assert [await status_of(s, url) for _ in range(2)] == [200, 200]
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientConnectionError):
                await status_of(s, url)


def test_refuse_after_exit_status_is_a_failure() -> None:
    port = free_port()
    argv = [sys.executable, "-m", "dpserve", "sim", "--port", str(port), "--refuse-after", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # stop_process signals the process group
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health", 60, proc)
        body = json.dumps(BODY).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
        assert proc.wait(timeout=30) == REFUSED_EXIT_CODE
    finally:
        stop_process(proc)


async def test_die_mid_stream(start_sim: SimFactory) -> None:
    with start_sim("--die-mid-stream-after", "1") as url:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url}/v1/chat/completions", json=STREAM) as resp:
                chunks, done = await read_sse(resp)
            assert done and len(chunks) > 10
            got: list[dict] = []
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.post(f"{url}/v1/chat/completions", json=STREAM) as resp:
                    assert resp.status == 200
                    async for line in resp.content:
                        if line.startswith(b"data: {"):
                            got.append({})
            assert 0 < len(got) < 10  # the stream started, then was cut
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientConnectionError):
                await status_of(s, url)
