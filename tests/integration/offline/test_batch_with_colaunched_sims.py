"""`dpserve batch --backend sim --dp-size 2`: replicas launched by the job, restarted when they die."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.integration.offline.helpers import read_output, write_input
from tests.integration.offline.sims import SIM_MODEL, run_batch

pytestmark = pytest.mark.timeout(240)


def _args(tmp_path: Path, engine_args: str) -> list[str]:
    return [str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--backend", "sim",
            "--dp-size", "2", "--engine-args", f"--time-scale 20 {engine_args}", "--stagger-s", "0",
            "--log-dir", str(tmp_path / "logs"), "--no-echo-replica-logs", "--progress", "none"]


def test_colaunched_replicas_serve_every_request_once(tmp_path: Path) -> None:
    ids = write_input(tmp_path / "in.jsonl", 200, model=SIM_MODEL, max_tokens=8)
    proc = run_batch(_args(tmp_path, ""))
    assert proc.returncode == 0, proc.stderr
    assert Counter(line["custom_id"] for line in read_output(tmp_path / "out.jsonl")) == Counter(ids)
    assert "200 succeeded, 0 failed" in proc.stderr


def test_replicas_that_keep_dying_are_restarted_and_the_job_finishes(tmp_path: Path) -> None:
    ids = write_input(tmp_path / "in.jsonl", 200, model=SIM_MODEL, max_tokens=8)
    proc = run_batch([*_args(tmp_path, "--refuse-after 40"), "--restart-backoff-s", "0.1",
                      "--max-restarts", "20", "--max-retries", "10"])
    assert proc.returncode == 0, proc.stderr
    lines = read_output(tmp_path / "out.jsonl")
    assert Counter(line["custom_id"] for line in lines) == Counter(ids)
    assert all(line["error"] is None for line in lines)
    assert "its supervisor restarts it" in proc.stderr and "healthy again" in proc.stderr
