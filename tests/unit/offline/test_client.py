"""Classifying a replica's reply: success, retryable, final."""

from __future__ import annotations

import pytest

from dpserve.offline.client import _from_reply


def test_2xx_json_object_is_success() -> None:
    out = _from_reply(200, b'{"choices": []}', "rid")
    assert out.is_success and out.body == {"choices": []} and out.request_id == "rid"


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (503, True), (400, False),
                                                   (404, False)])
def test_error_statuses(status: int, retryable: bool) -> None:
    out = _from_reply(status, b'{"error": {"message": "why"}}', None)
    assert not out.is_success and out.is_retryable is retryable and out.error == f"HTTP {status}: why"


def test_2xx_without_json_object_is_retried() -> None:
    out = _from_reply(200, b"not json", None)
    assert not out.is_success and out.is_retryable and out.body == "not json"
