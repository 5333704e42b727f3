"""The engine core runs in its own process: its death takes the replica down (so the supervisor
restarts it), and a core that cannot load the model fails the server's start with the reason."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.support import dpserve_process

pytestmark = [pytest.mark.model, pytest.mark.slow]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _engine_core_pid(server_pid: int) -> int:
    """The spawned core: the server's child whose command line is multiprocessing's spawn entry."""
    for pid in _children(server_pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            return pid
    raise AssertionError(f"no engine core among the children of {server_pid}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_a_dead_engine_core_fails_open_streams_and_stops_the_server(tmp_path: Path) -> None:
    port = free_port()
    args = ["engine", "--port", str(port), "--kv-cache-tokens", "2048"]
    with dpserve_process(args, port, log_path=tmp_path / "engine.log", timeout_s=180) as proc:
        core_pid = _engine_core_pid(proc.pid)
        body = {"model": "smollm2-135m", "prompt": "Count to a thousand:", "max_tokens": 1000,
                "ignore_eos": True, "stream": True}
        chunks: list[bytes] = []
        async with aiohttp.ClientSession() as session, \
                session.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as resp:
            assert resp.status == 200
            async for line in resp.content:
                chunks.append(line)
                if len(chunks) == 6:  # streaming for real: now kill the core under it
                    os.kill(core_pid, signal.SIGKILL)
        assert chunks[-2:] == [b"data: [DONE]\n", b"\n"]  # the stream ended, not hung
        assert any(b'"finish_reason":"abort"' in c or b'"error"' in c for c in chunks[6:])
        assert proc.wait(timeout=30) == 1  # the replica went down with its core, as a failure
    assert "engine core process died" in (tmp_path / "engine.log").read_text()


def test_a_core_that_cannot_load_the_model_fails_the_start(bundled_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(bundled_model_dir, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    port = free_port()
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "dpserve", "engine", "--model", str(broken),
                             "--port", str(port)], capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert "engine core failed to start" in result.stderr + result.stdout
    assert time.monotonic() - started < 170
