"""`dpserve bench` end to end against an in-process fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from dpserve.bench.benchmark import run_benchmark
from dpserve.bench.config import BenchConfig
from dpserve.http_names import SESSION_HEADER
from tests.conftest import free_port
from tests.integration.bench.fake_openai import MODEL, FakeState, make_app


@pytest.fixture
async def fake() -> AsyncIterator[tuple[str, FakeState]]:
    state = FakeState(worker_id="fake-0")
    runner = web.AppRunner(make_app(state))
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        await runner.cleanup()


async def test_closed_loop_chat_report(fake: tuple[str, FakeState]) -> None:
    url, state = fake
    state.token_delay_s = 0.002
    config = BenchConfig(url=url, num_prompts=12, input_len=20, output_len=6, concurrency=4,
                         ignore_eos=True, warmup=2, metrics_urls=(url,))
    report = await run_benchmark(config)
    assert report["completed"] == 12 and report["failed"] == 0
    assert report["total_output_tokens"] == 12 * 6
    assert report["worker_requests"] == {"fake-0": 12}
    assert report["config"]["model"] == MODEL  # discovered from /v1/models
    assert report["ttft_ms"]["p50"] is not None and report["itl_ms"]["mean"] is not None
    assert len(state.requests) == 14  # 2 warm-up + 12 measured
    assert state.max_in_flight == 4  # closed loop: never more than --concurrency
    body = state.requests[-1]
    assert body["ignore_eos"] is True and body["stream_options"] == {"include_usage": True}
    assert report["prefix_cache_hit_rate"] is not None and report["prefix_cache_hit_rate"] < 0.5


async def test_shared_prefix_hits_the_cache(fake: tuple[str, FakeState]) -> None:
    url, _ = fake
    config = BenchConfig(url=url, workload="shared-prefix", num_groups=2, prompts_per_group=5,
                         system_prompt_len=100, question_len=5, output_len=2, concurrency=1,
                         metrics_urls=(url,))
    report = await run_benchmark(config)
    assert report["completed"] == 10
    # 8 of 10 requests reuse a 100-word system prompt of ~105 words: hit rate ≈ 0.76
    assert report["prefix_cache_hit_rate"] == pytest.approx(0.76, abs=0.05)


async def test_multi_turn_sends_history_and_session(fake: tuple[str, FakeState]) -> None:
    url, state = fake
    config = BenchConfig(url=url, workload="multi-turn", num_sessions=2, turns=3, input_len=4,
                         output_len=3, endpoint="completions", concurrency=2)
    report = await run_benchmark(config)
    assert report["completed"] == 6
    by_session: dict[str, list[str]] = {}
    for headers, body in zip(state.headers, state.requests, strict=True):
        by_session.setdefault(headers[SESSION_HEADER], []).append(body["prompt"])
    assert len(by_session) == 2
    for prompts in by_session.values():
        assert len(prompts) == 3
        assert prompts[1].startswith(prompts[0] + "\n\n t0 t1 t2")  # the real reply is history


async def test_open_loop_non_streaming_with_failures(fake: tuple[str, FakeState]) -> None:
    url, state = fake
    state.fail_every = 3
    config = BenchConfig(url=url, num_prompts=9, input_len=5, output_len=4, request_rate=200.0,
                         stream=False, model="explicit", slo_ttft_ms=60_000)
    report = await run_benchmark(config)
    assert report["completed"] == 6 and report["failed"] == 3
    assert "HTTP 500" in next(iter(report["errors"]))
    assert report["itl_ms"]["mean"] is None  # no streaming, no inter-token gaps
    assert report["goodput"]["good_requests"] == 6
    assert {b["model"] for b in state.requests} == {"explicit"}


async def test_stop_event_reports_partial_run(fake: tuple[str, FakeState]) -> None:
    url, state = fake
    state.token_delay_s = 0.05
    stop = asyncio.Event()
    config = BenchConfig(url=url, num_prompts=50, input_len=5, output_len=20, concurrency=2)
    task = asyncio.create_task(run_benchmark(config, stop))
    while len(state.requests) < 4:
        await asyncio.sleep(0.01)
    stop.set()
    report = await asyncio.wait_for(task, timeout=30)
    assert report["interrupted"] is True
    assert report["completed"] + report["failed"] < 50


async def test_cli_writes_json_and_table(fake: tuple[str, FakeState], tmp_path: Path) -> None:
    url, _ = fake
    out = tmp_path / "report.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dpserve", "bench", "--url", url, "--num-prompts", "5", "--input-len", "8",
        "--output-len", "3", "--seed", "1", "--output-json", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, stderr.decode()
    assert "Serving Benchmark Result" in stdout.decode()
    assert "5/5 requests" in stderr.decode()  # plain progress lines off a TTY
    report = json.loads(out.read_text())
    assert report["completed"] == 5
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert set(report[key]) == {"mean", "p50", "p90", "p99"}


async def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dpserve", "bench", "--url", f"http://127.0.0.1:{free_port()}",
        "--num-prompts", "1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1
    assert "cannot list models" in stderr.decode()


async def test_bad_tokenizer_dir_is_a_config_error(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dpserve", "bench", "--tokenizer", str(tmp_path), "--num-prompts", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2
    assert "--tokenizer" in stderr.decode() and "Traceback" not in stderr.decode()
