"""Workload from flags or a `dpserve bench --config` file."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpserve.config import ConfigError
from dpserve.planner.workload import resolve_workload


def test_defaults_and_flags() -> None:
    w = resolve_workload(None, None, None, None, None)
    assert (w.prompt_len, w.output_len, w.concurrency, w.request_rate) == (1024, 256, 64, None)
    w = resolve_workload(100, 10, None, 2.5, None)
    assert (w.prompt_len, w.output_len, w.concurrency, w.request_rate) == (100, 10, None, 2.5)


def test_bench_file_lengths_and_load(tmp_path: Path) -> None:
    f = tmp_path / "bench.yaml"
    f.write_text("workload: shared-prefix\nsystem-prompt-len: 900\nquestion-len: 100\noutput-len: 50\n"
                 "request-rate: 4\n")
    w = resolve_workload(None, None, None, None, f)
    assert (w.prompt_len, w.output_len, w.request_rate, w.concurrency) == (1000, 50, 4.0, None)
    w = resolve_workload(None, 99, 16, None, f)  # flags win, a flag's load replaces the file's
    assert (w.prompt_len, w.output_len, w.request_rate, w.concurrency) == (1000, 99, None, 16)
    f.write_text("workload: multi-turn\ninput-len: 100\noutput-len: 20\nturns: 3\nconcurrency: 5\n")
    w = resolve_workload(None, None, None, None, f)
    assert (w.prompt_len, w.concurrency) == (100 * 2 + 20 * 1, 5)


def test_bad_bench_file(tmp_path: Path) -> None:
    f = tmp_path / "bench.yaml"
    f.write_text("input-lenn: 3\n")
    with pytest.raises(ConfigError, match=r"--workload-file .*unknown config key input-lenn"):
        resolve_workload(None, None, None, None, f)
