"""--resume: what OUT already holds, after dropping a torn last line left by a crash."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dpserve.config import ConfigError
from dpserve.offline.records import INVALID_LINE

logger = logging.getLogger(__name__)


class CorruptOutputError(ConfigError):
    """OUT has an unreadable line before its last one: not something a crash can produce."""


@dataclass
class DoneSet:
    """custom_ids already answered, and input line numbers already reported as malformed."""

    custom_ids: set[str] = field(default_factory=set)
    invalid_lines: set[int] = field(default_factory=set)
    num_lines: int = 0

    def add(self, obj: Any) -> None:
        self.num_lines += 1
        cid = obj.get("custom_id")
        if isinstance(cid, str):
            self.custom_ids.add(cid)
        err = obj.get("error")
        if isinstance(err, dict) and err.get("code") == INVALID_LINE and isinstance(err.get("line"), int):
            self.invalid_lines.add(err["line"])


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def read_done(path: Path) -> DoneSet:
    """Read OUT line by line; truncate a torn (unterminated or unparsable) last line in place."""
    done = DoneSet()
    if not path.exists():
        return done
    good_end = 0  # byte offset just after the last complete, parsable line
    bad: tuple[int, bytes] | None = None  # (line number, raw) of an unreadable line
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if bad is not None:  # something follows the unreadable line: not a torn tail
                raise CorruptOutputError(f"{path}: line {bad[0]} is not a JSON object; not resuming")
            obj = _parse(raw) if raw.endswith(b"\n") else None  # unterminated = torn by definition
            if obj is None:
                bad = (line_no, raw)
                continue
            done.add(obj)
            good_end += len(raw)
    if bad is not None:
        logger.warning("%s: dropping torn last line %d (%d bytes)", path, bad[0], len(bad[1]))
        os.truncate(path, good_end)
    return done
