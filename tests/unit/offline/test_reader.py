"""scan_input: validation with line numbers, duplicates, prefix keys; load_request by offset."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from dpserve.offline.reader import DuplicateCustomIdError, load_request, prefix_key, scan_input, validate


def _req(cid: str, content: str = "hi", url: str = "/v1/chat/completions") -> bytes:
    return orjson.dumps({"custom_id": cid, "method": "POST", "url": url,
                         "body": {"model": "m", "messages": [{"role": "user", "content": content}]}})


@pytest.mark.parametrize(("obj", "problem"), [
    ([], "not a JSON object"),
    ({"url": "/v1/completions", "body": {}}, "custom_id"),
    ({"custom_id": "a", "method": "GET", "url": "/v1/completions", "body": {}}, "method must be POST"),
    ({"custom_id": "a", "url": "/v1/embeddings", "body": {}}, "url must be one of"),
    ({"custom_id": "a", "url": "/v1/completions", "body": "x"}, "body must be"),
    ({"custom_id": "a", "url": "/v1/completions", "body": {"stream": True}}, "stream"),
])
def test_validate_names_the_problem(obj: object, problem: str) -> None:
    message = validate(obj)
    assert message is not None and problem in message


def test_scan_collects_valid_and_invalid_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([_req("a"), b"", b"{oops", _req("b", url="/v1/nope"), _req("c")]) + b"\n")
    scan = scan_input(path)
    assert [(r.line_no, r.custom_id) for r in scan.requests] == [(1, "a"), (5, "c")]
    assert [(i.line_no, i.custom_id) for i in scan.invalid] == [(3, None), (4, "b")]
    with open(path, "rb") as f:
        req = load_request(f, scan.requests[1])
    assert req.custom_id == "c" and req.body["messages"][0]["content"] == "hi" and req.line_no == 5


def test_duplicate_custom_ids_fail_before_any_work(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([_req("a"), _req("b"), _req("a")]))
    with pytest.raises(DuplicateCustomIdError, match="'a' on lines 1 and 3"):
        scan_input(path)


def test_prefix_key_groups_long_shared_prefixes_only() -> None:
    system = "You are a careful assistant. " * 10

    def body(q: str) -> dict[str, object]:
        return {"model": "m", "messages": [{"role": "system", "content": system},
                                           {"role": "user", "content": q}]}

    k1 = prefix_key("/v1/chat/completions", body("q1"), 200)
    k2 = prefix_key("/v1/chat/completions", body("q2"), 200)
    assert k1 is not None and k1 == k2
    short = {"messages": [{"role": "user", "content": "short"}]}
    assert prefix_key("/v1/chat/completions", short, 200) is None
    assert prefix_key("/v1/completions", {"prompt": "a" * 300}, 200) != prefix_key(
        "/v1/completions", {"prompt": "b" * 300}, 200)
