"""Replica output: prefixed on the echo stream, kept whole in the file, tail bounded."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from dpserve.launcher.logs import ReplicaLog


async def test_lines_are_prefixed_on_echo_and_plain_in_the_file(tmp_path: Path) -> None:
    echo = io.BytesIO()
    log = ReplicaLog("r3", tmp_path / "r3.log", echo, tail_lines=2)
    reader = asyncio.StreamReader()
    reader.feed_data(b"one\ntwo\nthree")
    reader.feed_eof()
    await log.pump(reader)
    log.close()
    assert echo.getvalue() == b"[r3] one\n[r3] two\n[r3] three\n"
    assert (tmp_path / "r3.log").read_bytes() == b"one\ntwo\nthree\n"
    assert log.tail() == "two\nthree\n"


def test_notes_are_marked_and_no_echo_is_fine(tmp_path: Path) -> None:
    log = ReplicaLog("r0", tmp_path / "sub" / "r0.log", None)
    log.note("restarting in 1.0s")
    log.close()
    assert (tmp_path / "sub" / "r0.log").read_text() == "--- dpserve serve: restarting in 1.0s\n"


class _BrokenPipe(io.BytesIO):
    def write(self, data: bytes) -> int:  # type: ignore[override]
        raise BrokenPipeError


def test_a_broken_echo_stream_does_not_stop_the_log_file(tmp_path: Path) -> None:
    log = ReplicaLog("r0", tmp_path / "r0.log", _BrokenPipe())
    log.write_line(b"first")
    log.write_line(b"second")
    log.close()
    assert (tmp_path / "r0.log").read_bytes() == b"first\nsecond\n"
