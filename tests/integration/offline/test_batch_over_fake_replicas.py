"""`dpserve batch` in-process against fake replicas: exactly-once results, retries, failures."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import orjson

from dpserve.config import build_config
from dpserve.offline.config import BatchConfig
from dpserve.offline.job import run_job
from dpserve.offline.plan import plan_job
from tests.integration.offline.fake_replica import FakeReplica, running_fakes, start_fake
from tests.integration.offline.helpers import chat_request, read_output, write_input


def _config(tmp_path: Path, urls: list[str], **extra: object) -> BatchConfig:
    values = {"input": tmp_path / "in.jsonl", "output": tmp_path / "out.jsonl", "worker_urls": tuple(urls),
              "progress": "none", "down_probe_interval_s": 0.05, **extra}
    return build_config(BatchConfig, values)


async def _run(config: BatchConfig) -> tuple[int, str]:
    stream = io.StringIO()
    rc = await run_job(config, plan_job(config), stream)
    return rc, stream.getvalue()


async def test_every_request_answered_exactly_once_over_two_replicas(tmp_path: Path) -> None:
    fakes = [FakeReplica(delay_s=0.001), FakeReplica(delay_s=0.003)]
    async with running_fakes(*fakes) as urls:
        ids = write_input(tmp_path / "in.jsonl", 200)
        rc, summary = await _run(_config(tmp_path, urls, max_inflight_per_replica=4))
    lines = read_output(tmp_path / "out.jsonl")
    assert rc == 0
    assert Counter(line["custom_id"] for line in lines) == Counter(ids)
    assert all(line["error"] is None and line["response"]["status_code"] == 200 for line in lines)
    assert all(f.seen for f in fakes), "both replicas pulled work"
    assert sum(sum(f.seen.values()) for f in fakes) == 200
    assert "200 succeeded" in summary


async def test_failing_replica_is_retried_elsewhere(tmp_path: Path) -> None:
    good, bad = FakeReplica(), FakeReplica(fail_status=503)
    async with running_fakes(good, bad) as urls:
        ids = write_input(tmp_path / "in.jsonl", 40)
        rc, _ = await _run(_config(tmp_path, urls, max_retries=2))
    lines = read_output(tmp_path / "out.jsonl")
    assert rc == 0
    assert sorted(line["custom_id"] for line in lines) == sorted(ids)
    assert all(line["error"] is None for line in lines)
    assert sum(good.seen.values()) == 40


async def test_request_failing_everywhere_is_written_with_its_error(tmp_path: Path) -> None:
    fakes = [FakeReplica(fail_status=500), FakeReplica(fail_status=500)]
    async with running_fakes(*fakes) as urls:
        write_input(tmp_path / "in.jsonl", 3)
        rc, summary = await _run(_config(tmp_path, urls, max_retries=1))
    lines = read_output(tmp_path / "out.jsonl")
    assert rc == 0 and len(lines) == 3
    for line in lines:
        assert line["error"]["code"] == "request_failed"
        assert line["response"]["status_code"] == 500
        assert sum(f.seen[line["custom_id"]] for f in fakes) == 2  # first try + one retry
        assert {f.seen[line["custom_id"]] for f in fakes} == {1}  # the retry went to the other one
    assert "3 failed" in summary


async def test_client_error_is_not_retried(tmp_path: Path) -> None:
    fake = FakeReplica(fail_status=400)
    async with running_fakes(fake) as urls:
        write_input(tmp_path / "in.jsonl", 2)
        await _run(_config(tmp_path, urls))
    assert sum(fake.seen.values()) == 2
    assert all(line["response"]["status_code"] == 400 for line in read_output(tmp_path / "out.jsonl"))


async def test_malformed_lines_reported_and_skipped(tmp_path: Path) -> None:
    fake = FakeReplica()
    good = [orjson.dumps(chat_request(f"ok-{i}", "hi")) for i in range(3)]
    raw = [good[0], b"{not json", good[1], b'{"custom_id": "bad-url", "method": "POST", "url": "/v1/x", '
           b'"body": {}}', b"", good[2]]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(raw) + b"\n")
    async with running_fakes(fake) as urls:
        rc, _ = await _run(_config(tmp_path, urls, preserve_order=True))
    lines = read_output(tmp_path / "out.jsonl")
    assert rc == 0
    assert [line["custom_id"] for line in lines] == ["ok-0", None, "ok-1", "bad-url", "ok-2"]
    errors = [line["error"] for line in lines if line["error"]]
    assert [(e["code"], e["line"]) for e in errors] == [("invalid_input_line", 2), ("invalid_input_line", 4)]
    assert errors[1]["message"].startswith("line 4: url must be")
    assert sum(fake.seen.values()) == 3


async def test_preserve_order_writes_input_order(tmp_path: Path) -> None:
    fakes = [FakeReplica(delay_s=0.002, jitter_steps=7), FakeReplica(delay_s=0.001, jitter_steps=5)]
    async with running_fakes(*fakes) as urls:
        ids = write_input(tmp_path / "in.jsonl", 120)
        rc, _ = await _run(_config(tmp_path, urls, preserve_order=True,
                                   order_window=16, max_inflight_per_replica=6))
    assert rc == 0
    assert [line["custom_id"] for line in read_output(tmp_path / "out.jsonl")] == ids


async def test_without_preserve_order_output_follows_completion(tmp_path: Path) -> None:
    fake = FakeReplica(delay_s=0.002, jitter_steps=7)
    async with running_fakes(fake) as urls:
        ids = write_input(tmp_path / "in.jsonl", 60)
        await _run(_config(tmp_path, urls, max_inflight_per_replica=8))
    written = [line["custom_id"] for line in read_output(tmp_path / "out.jsonl")]
    assert sorted(written) == sorted(ids) and written != ids  # jitter reorders completions


async def test_all_replicas_down_stops_the_job_resumably(tmp_path: Path) -> None:
    runner, url = await start_fake(FakeReplica())
    await runner.cleanup()  # nothing listens there any more
    write_input(tmp_path / "in.jsonl", 3)
    rc, summary = await _run(_config(tmp_path, [url], no_replica_timeout_s=0.3))
    assert rc == 1
    assert "3 in input, 0 already done, 0 succeeded" in summary
    assert read_output(tmp_path / "out.jsonl") == []


async def test_slow_replica_takes_a_smaller_share(tmp_path: Path) -> None:
    fast, slow = FakeReplica(delay_s=0.001), FakeReplica(delay_s=0.05)
    async with running_fakes(fast, slow) as urls:
        write_input(tmp_path / "in.jsonl", 100)
        rc, _ = await _run(_config(tmp_path, urls, max_inflight_per_replica=2))
    assert rc == 0
    assert sum(fast.seen.values()) + sum(slow.seen.values()) == 100
    assert sum(slow.seen.values()) < 30  # dynamic pulling: no fixed 50/50 shard waits on the slow one
