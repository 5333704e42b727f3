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


@pytest.mark.parametrize(("text", "message"), [
    ("concurrency: 18446744073709551616\n", "concurrency must be in 1..10000000"),  # 2^64: orjson's limit
    ("input-len: 1000000000000000000000000000000\n", "prompt_len must be in 1..100000000"),
    ("request-rate: .inf\n", r"request_rate must be a finite number in \(0, 1e\+07\], got inf"),
    # multi-turn's mean history in integers: a float of these overflowed
    ("workload: multi-turn\ninput-len: 1" + "0" * 400 + "\nturns: 3\n", "prompt_len must be in 1..100000000"),
    ("workload: multi-turn\ninput-len: 100\noutput-len: 50\nturns: 1000000000\n",
     "prompt_len must be in 1..100000000, got 75000000025"),
    ("input-len: 1.9\n", "'input_len': 1.9 is not an integer"),  # int(1.9) == 1 before
])
def test_bench_file_values_have_the_flags_bounds(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bench.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=rf"--workload-file .*{message}"):
        resolve_workload(None, None, None, None, f)
