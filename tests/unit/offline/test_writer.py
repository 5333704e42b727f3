"""ResultFile appends whole lines; OrderedWriter writes in input order within its window."""

from __future__ import annotations

from pathlib import Path

import orjson

from dpserve.offline.writer import OrderedWriter, ResultFile, UnorderedWriter


def _lines(path: Path) -> list[int]:
    return [orjson.loads(raw)["n"] for raw in path.read_bytes().splitlines()]


def test_result_file_appends_lines_and_syncs_on_interval(tmp_path: Path) -> None:
    now = [0.0]
    out = ResultFile(tmp_path / "o.jsonl", fsync_interval_s=1.0, clock=lambda: now[0])
    out.write({"n": 1})
    now[0] = 2.0
    out.write({"n": 2})
    out.close()
    assert (tmp_path / "o.jsonl").read_bytes().endswith(b"\n")
    assert _lines(tmp_path / "o.jsonl") == [1, 2]
    reopened = ResultFile(tmp_path / "o.jsonl", 1.0)
    reopened.write({"n": 3})
    reopened.close()
    assert _lines(tmp_path / "o.jsonl") == [1, 2, 3]


def test_unordered_writes_at_once(tmp_path: Path) -> None:
    out = ResultFile(tmp_path / "o.jsonl", 0.0)
    w = UnorderedWriter(out)
    w.submit(7, {"n": 7})
    w.submit(3, {"n": 3})
    out.close()
    assert _lines(tmp_path / "o.jsonl") == [7, 3]


def test_ordered_holds_back_until_the_gap_fills(tmp_path: Path) -> None:
    out = ResultFile(tmp_path / "o.jsonl", 0.0)
    w = OrderedWriter(out, [2, 5, 9, 11], window=2)
    assert w.admits(5) and not w.admits(9)
    w.submit(5, {"n": 5})
    assert out.lines_written == 0 and w.num_held == 1
    w.submit(2, {"n": 2})
    assert out.lines_written == 2 and w.num_held == 0
    assert w.admits(11)
    w.submit(11, {"n": 11})
    w.submit(9, {"n": 9})
    out.close()
    assert _lines(tmp_path / "o.jsonl") == [2, 5, 9, 11]
