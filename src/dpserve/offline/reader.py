"""Reading the input file: validate every line up front, then load requests one at a time.

The scan keeps only a small reference per line (byte offset, custom_id, prefix key), so a huge
input costs little memory; request bodies are re-read from disk when they are dispatched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from dpserve.config import ConfigError
from dpserve.http_names import CHAT_PATH
from dpserve.offline.records import ENDPOINTS, BatchRequest


class DuplicateCustomIdError(ConfigError):
    """The input uses one custom_id on several lines; found before any work starts."""


@dataclass(frozen=True)
class RequestRef:
    """Where a valid request lives in the input file, plus what scheduling needs to know."""

    line_no: int
    offset: int
    length: int
    custom_id: str
    prefix_key: bytes | None = None  # requests with equal keys share a long prompt prefix


@dataclass(frozen=True)
class InvalidLine:
    line_no: int
    custom_id: str | None
    message: str


@dataclass
class InputScan:
    requests: list[RequestRef] = field(default_factory=list)
    invalid: list[InvalidLine] = field(default_factory=list)


def validate(obj: Any) -> str | None:
    """Why a parsed line is not a valid batch request, or None when it is."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "custom_id must be a non-empty string"
    if obj.get("method", "POST") != "POST":
        return f"method must be POST, got {obj.get('method')!r}"
    if obj.get("url") not in ENDPOINTS:
        return f"url must be one of {', '.join(ENDPOINTS)}, got {obj.get('url')!r}"
    body = obj.get("body")
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if body.get("stream"):
        return "stream is not supported in batch requests"
    return None


def prefix_text(url: str, body: dict[str, Any]) -> str:
    """The prompt as text, for grouping: model + chat messages in order, or the completion prompt."""
    model = str(body.get("model", ""))
    if url == CHAT_PATH:
        parts = []
        for msg in body.get("messages") or []:
            if isinstance(msg, dict):
                content = msg.get("content")
                text = content if isinstance(content, str) else orjson.dumps(content).decode()
                parts.append(f"{msg.get('role')}\x1f{text}\x1e")
        return model + "\x1d" + "".join(parts)
    prompt = body.get("prompt")
    return model + "\x1d" + (prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode())


def prefix_key(url: str, body: dict[str, Any], prefix_chars: int) -> bytes | None:
    """A short digest of the first `prefix_chars` characters of the prompt; None if shorter."""
    text = prefix_text(url, body)
    if len(text) < prefix_chars:
        return None
    return hashlib.blake2b(text[:prefix_chars].encode(), digest_size=12).digest()


def _iter_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number from 1, byte offset, raw line without newline)."""
    offset = 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            yield line_no, offset, raw.rstrip(b"\r\n")
            offset += len(raw)


def _custom_id_of(obj: Any) -> str | None:
    cid = obj.get("custom_id") if isinstance(obj, dict) else None
    return cid if isinstance(cid, str) and cid else None


def scan_input(path: Path, prefix_chars: int | None = None) -> InputScan:
    """Validate every line; raises DuplicateCustomIdError if a custom_id repeats, OSError if unreadable."""
    scan = InputScan()
    first_seen: dict[str, int] = {}
    duplicates: list[str] = []
    for line_no, offset, raw in _iter_lines(path):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            scan.invalid.append(InvalidLine(line_no, None, f"not valid JSON ({exc})"))
            continue
        cid = _custom_id_of(obj)
        if cid is not None:
            if cid in first_seen:
                duplicates.append(f"{cid!r} on lines {first_seen[cid]} and {line_no}")
            first_seen.setdefault(cid, line_no)
        problem = validate(obj)
        if problem is not None:
            scan.invalid.append(InvalidLine(line_no, cid, problem))
            continue
        key = prefix_key(obj["url"], obj["body"], prefix_chars) if prefix_chars else None
        scan.requests.append(RequestRef(line_no, offset, len(raw), obj["custom_id"], key))
    if duplicates:
        more = f"; and {len(duplicates) - 5} more" if len(duplicates) > 5 else ""
        shown = "; ".join(duplicates[:5]) + more
        raise DuplicateCustomIdError(f"duplicate custom_id in {path}: {shown}")
    return scan


def load_request(f: BinaryIO, ref: RequestRef) -> BatchRequest:
    """Re-read one scanned request from the open input file."""
    f.seek(ref.offset)
    obj = orjson.loads(f.read(ref.length))
    return BatchRequest(ref.line_no, ref.custom_id, obj["url"], obj["body"])
