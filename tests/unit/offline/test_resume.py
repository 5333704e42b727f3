"""read_done: custom_ids and malformed-line numbers in OUT; a torn tail is cut off."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from dpserve.offline.records import invalid_line, success_line
from dpserve.offline.resume import CorruptOutputError, read_done


def _line(obj: dict[str, object]) -> bytes:
    return orjson.dumps(obj) + b"\n"


def test_missing_file_means_nothing_done(tmp_path: Path) -> None:
    assert read_done(tmp_path / "nope.jsonl").custom_ids == set()


def test_collects_custom_ids_and_invalid_lines(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    out.write_bytes(_line(success_line("a", 200, {}, "r")) + _line(invalid_line(4, None, "bad")))
    done = read_done(out)
    assert done.custom_ids == {"a"} and done.invalid_lines == {4} and done.num_lines == 2


def test_torn_last_line_is_dropped_and_truncated(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    good = _line(success_line("a", 200, {}, "r"))
    out.write_bytes(good + _line(success_line("b", 200, {}, "r"))[:20])
    done = read_done(out)
    assert done.custom_ids == {"a"}
    assert out.read_bytes() == good


def test_garbage_in_the_middle_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    good = _line(success_line("a", 200, {}, "r"))
    out.write_bytes(good + b"garbage\n" + good)
    with pytest.raises(CorruptOutputError, match="line 2"):
        read_done(out)
