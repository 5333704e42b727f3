"""SIGKILL `dpserve batch` half-way, then --resume: every custom_id exactly once in OUT."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from pathlib import Path

from tests.integration.offline.fake_replica import FakeReplica, start_fake
from tests.integration.offline.helpers import read_output, write_input


async def _batch(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "dpserve", "batch", *args,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)


async def _wait_lines(path: Path, at_least: int, proc: asyncio.subprocess.Process) -> None:
    while not path.exists() or path.read_bytes().count(b"\n") < at_least:
        assert proc.returncode is None, "batch ended before it could be killed"
        await asyncio.sleep(0.02)


async def test_kill_then_resume_gives_each_custom_id_once(tmp_path: Path) -> None:
    fakes = [FakeReplica(delay_s=0.04), FakeReplica(delay_s=0.04)]
    started = [await start_fake(f) for f in fakes]
    urls = [url for _, url in started]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(inp, 200)
    common = [str(inp), "-o", str(out), "--worker-urls", *urls, "--max-inflight-per-replica", "2",
              "--progress", "lines", "--progress-interval-s", "0.2"]
    try:
        first = await _batch(*common)
        await asyncio.wait_for(_wait_lines(out, 60, first), timeout=60)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        killed_at = len(read_output(out))
        assert 60 <= killed_at < 200
        refused = await _batch(*common)  # OUT has results: starting over needs an explicit choice
        refused_out, _ = await refused.communicate()
        assert refused.returncode == 2 and b"--resume" in refused_out
        second = await _batch(*common, "--resume")
        stdout, _ = await asyncio.wait_for(second.communicate(), timeout=120)
    finally:
        for runner, _ in started:
            await runner.cleanup()
    assert second.returncode == 0, stdout.decode()
    assert f"{killed_at} already done".encode() in stdout
    assert Counter(line["custom_id"] for line in read_output(out)) == Counter(ids)
    sent = sum(sum(f.seen.values()) for f in fakes)
    assert 200 <= sent <= 200 + 2 * 2  # at most the in-flight ones at the kill are sent twice


async def test_sigterm_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    fake = FakeReplica(delay_s=0.02)
    runner, url = await start_fake(fake)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(inp, 100)
    common = [str(inp), "-o", str(out), "--worker-urls", url, "--max-inflight-per-replica", "2",
              "--progress", "none"]
    try:
        first = await _batch(*common)
        await asyncio.wait_for(_wait_lines(out, 20, first), timeout=60)
        first.send_signal(signal.SIGTERM)
        stdout, _ = await asyncio.wait_for(first.communicate(), timeout=30)
        assert first.returncode == 143 and b"continue with --resume" in stdout
        second = await _batch(*common, "--resume")
        await asyncio.wait_for(second.communicate(), timeout=120)
    finally:
        await runner.cleanup()
    assert second.returncode == 0
    assert Counter(line["custom_id"] for line in read_output(out)) == Counter(ids)
