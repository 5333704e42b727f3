"""Shared by the batch integration tests: writing inputs and reading OUT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def chat_request(custom_id: str, content: str, max_tokens: int = 4, model: str = "m") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content}],
                     "max_tokens": max_tokens, "temperature": 0}}


def write_input(path: Path, n: int, prefix: str = "req", model: str = "m", max_tokens: int = 4) -> list[str]:
    """n chat requests custom_id prefix-0..; returns the ids in input order."""
    ids = [f"{prefix}-{i}" for i in range(n)]
    path.write_bytes(b"".join(orjson.dumps(chat_request(cid, f"question {i}", max_tokens, model)) + b"\n"
                              for i, cid in enumerate(ids)))
    return ids


def read_output(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]
