"""plan_job: what a run still has to do, given the input and (for --resume) OUT."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from dpserve.config import ConfigError, build_config
from dpserve.offline.config import BatchConfig
from dpserve.offline.plan import plan_job
from dpserve.offline.records import invalid_line, success_line


def _config(tmp_path: Path, **extra: object) -> BatchConfig:
    return build_config(BatchConfig, {"input": tmp_path / "in.jsonl", "output": tmp_path / "out.jsonl",
                                      "worker_urls": ("http://x",), **extra})


def _write_input(tmp_path: Path) -> None:
    reqs = [orjson.dumps({"custom_id": f"c{i}", "url": "/v1/completions", "body": {"prompt": "p"}})
            for i in range(4)]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join([reqs[0], b"nope", reqs[1], reqs[2], reqs[3]]) + b"\n")


def test_fresh_run_does_everything(tmp_path: Path) -> None:
    _write_input(tmp_path)
    plan = plan_job(_config(tmp_path))
    assert [r.custom_id for r in plan.pending] == ["c0", "c1", "c2", "c3"]
    assert [i.line_no for i in plan.invalid] == [2]
    assert plan.output_order == [1, 2, 3, 4, 5] and plan.skipped == 0


def test_existing_output_needs_resume(tmp_path: Path) -> None:
    _write_input(tmp_path)
    (tmp_path / "out.jsonl").write_bytes(orjson.dumps(success_line("c0", 200, {}, "r")) + b"\n")
    with pytest.raises(ConfigError, match="--resume"):
        plan_job(_config(tmp_path))


def test_resume_skips_done_ids_and_reported_lines(tmp_path: Path) -> None:
    _write_input(tmp_path)
    done = [success_line("c0", 200, {}, "r"), invalid_line(2, None, "bad"), success_line("c2", 200, {}, "r")]
    (tmp_path / "out.jsonl").write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in done) + b'{"torn')
    plan = plan_job(_config(tmp_path, resume=True))
    assert [r.custom_id for r in plan.pending] == ["c1", "c3"]
    assert plan.invalid == [] and plan.skipped == 2 and plan.input_requests == 4
    assert not (tmp_path / "out.jsonl").read_bytes().endswith(b'{"torn')


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read input"):
        plan_job(_config(tmp_path))
