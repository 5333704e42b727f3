"""`dpserve batch` against real `dpserve sim` processes: exactly once, order, dead replica."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests.integration.offline.helpers import chat_request, read_output, write_input
from tests.integration.offline.sims import SIM_MODEL, metric, run_batch, sim_replicas

pytestmark = pytest.mark.timeout(240)


def _args(tmp_path: Path, urls: list[str], *extra: str) -> list[str]:
    return [str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--worker-urls", *urls,
            "--progress", "lines", "--progress-interval-s", "0.5", *extra]


def test_200_requests_over_two_sims_each_come_back_once(tmp_path: Path) -> None:
    ids = write_input(tmp_path / "in.jsonl", 200, model=SIM_MODEL, max_tokens=8)
    with sim_replicas([(), ()], tmp_path) as urls:
        proc = run_batch(_args(tmp_path, urls, "--summary-json", str(tmp_path / "summary.json")))
        served = [metric(u, "vllm:e2e_request_latency_seconds_count") for u in urls]
    assert proc.returncode == 0, proc.stderr
    lines = read_output(tmp_path / "out.jsonl")
    assert Counter(line["custom_id"] for line in lines) == Counter(ids)
    assert all(line["error"] is None for line in lines)
    assert all(line["response"]["body"]["usage"]["completion_tokens"] == 8 for line in lines)
    assert sum(served) == 200 and min(served) > 0
    assert "200 succeeded, 0 failed" in proc.stderr and "batch: 200/200" in proc.stderr


def test_preserve_order_matches_input_order(tmp_path: Path) -> None:
    ids = write_input(tmp_path / "in.jsonl", 80, model=SIM_MODEL, max_tokens=8)
    with sim_replicas([(), ("--slow-first-byte-s", "0.01")], tmp_path) as urls:
        proc = run_batch(_args(tmp_path, urls, "--preserve-order", "--order-window", "8"))
    assert proc.returncode == 0, proc.stderr
    assert [line["custom_id"] for line in read_output(tmp_path / "out.jsonl")] == ids


def test_replica_killed_mid_run_costs_no_request(tmp_path: Path) -> None:
    ids = write_input(tmp_path / "in.jsonl", 200, model=SIM_MODEL, max_tokens=8)
    with sim_replicas([(), ("--die-mid-stream-after", "30")], tmp_path) as urls:
        proc = run_batch(_args(tmp_path, urls, "--max-retries", "2"))
    assert proc.returncode == 0, proc.stderr
    lines = read_output(tmp_path / "out.jsonl")
    assert Counter(line["custom_id"] for line in lines) == Counter(ids)
    assert all(line["error"] is None for line in lines), [x["error"] for x in lines if x["error"]][:3]
    assert "unreachable; routing around it" in proc.stderr
    assert "retries" in proc.stderr and " 0 retries" not in proc.stderr


def test_sigkill_half_way_then_resume_gives_each_custom_id_once(tmp_path: Path) -> None:
    ids = write_input(tmp_path / "in.jsonl", 200, model=SIM_MODEL, max_tokens=16)
    out = tmp_path / "out.jsonl"
    with sim_replicas([("--slow-first-byte-s", "0.05"), ("--slow-first-byte-s", "0.05")], tmp_path) as urls:
        args = _args(tmp_path, urls, "--max-inflight-per-replica", "2")
        first = subprocess.Popen([sys.executable, "-m", "dpserve", "batch", *args],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while (not out.exists() or out.read_bytes().count(b"\n") < 80) and time.monotonic() < deadline:
                assert first.poll() is None, "batch finished before it could be killed"
                time.sleep(0.01)
        finally:
            first.kill()
            first.wait()
        done_before = {line["custom_id"] for line in read_output(out)}
        assert 80 <= len(done_before) < 200
        resumed = run_batch([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(done_before)} already done" in resumed.stderr
    assert Counter(line["custom_id"] for line in read_output(out)) == Counter(ids)


def test_malformed_lines_are_reported_with_line_numbers_and_skipped(tmp_path: Path) -> None:
    good = [orjson.dumps(chat_request(f"ok-{i}", "hi", 4, SIM_MODEL)) for i in range(4)]
    raw = [good[0], b'{"custom_id": "x"', good[1], b'{"custom_id": "no-body", "url": "/v1/completions"}',
           good[2], good[3]]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(raw) + b"\n")
    with sim_replicas([()], tmp_path) as urls:
        proc = run_batch(_args(tmp_path, urls))
    assert proc.returncode == 0, proc.stderr
    assert "in.jsonl line 2 skipped: not valid JSON" in proc.stderr
    assert "in.jsonl line 4 skipped: body must be a JSON object" in proc.stderr
    lines = read_output(tmp_path / "out.jsonl")
    ok = sorted(line["custom_id"] for line in lines if line["error"] is None)
    assert ok == ["ok-0", "ok-1", "ok-2", "ok-3"]
    assert sorted(line["error"]["line"] for line in lines if line["error"]) == [2, 4]
    assert "invalid lines 2" in proc.stderr


def test_hanging_replica_times_out_and_work_moves_on(tmp_path: Path) -> None:
    ids = write_input(tmp_path / "in.jsonl", 60, model=SIM_MODEL, max_tokens=8)
    with sim_replicas([(), ("--hang-after", "10")], tmp_path) as urls:
        proc = run_batch(_args(tmp_path, urls, "--request-timeout-s", "0.5",
                               "--max-inflight-per-replica", "4"))
    assert proc.returncode == 0, proc.stderr
    lines = read_output(tmp_path / "out.jsonl")
    assert Counter(line["custom_id"] for line in lines) == Counter(ids)
    assert all(line["error"] is None for line in lines)
