"""`plan --diagnose`'s pure pieces: the URL and admin key as bad input, failure reasons, replica
labels and health matched by position (review_plan findings 10 and 11). The HTTP side is in
tests/integration/planner/test_diagnose_against_a_hostile_fleet.py."""

from __future__ import annotations

import pytest

from dpserve.config import ConfigError
from dpserve.http_body import BodyTooLarge
from dpserve.planner.diagnose import (
    MAX_LABEL_CHARS,
    bearer_key,
    failure_reason,
    gateway_url,
    healthy_at_end,
    replica_labels,
)


@pytest.mark.parametrize(("raw", "url"), [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
    ("HTTP://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("HttpS://gw.example:443/prefix//", "https://gw.example:443/prefix"),
    ("http://[::1]:8000", "http://[::1]:8000"),
    ("http://localhost", "http://localhost"),
])
def test_gateway_url_normalises(raw: str, url: str) -> None:
    assert gateway_url(raw) == url


@pytest.mark.parametrize(("raw", "why"), [
    ("http://", "URL, got 'http://'"),
    ("http:///workers", "URL"),
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://127.0.0.1:99999", "Port out of range"),
    ("http://127.0.0.1:abc", "Port could not be cast"),
    ("http://127.0.0.1:0", "URL"),
    ("ftp://127.0.0.1:8000", "URL"),
    ("127.0.0.1:8000", "URL"),
    ("http://127.0.0.1:8000/?x=1", "no query or fragment"),
    ("http://127.0.0.1:8000/#top", "no query or fragment"),
    ("http://127.0.0.1:8000/\nX: 1", "URL"),
    ("http://a b", "URL"),
    ("http://a..b:8000", "not a valid name"),  # review_plan2: these reached the resolver (a traceback)
    ("http://.:80", "not a valid name"),
    ("http://" + "a" * 64 + ":80", "not a valid name"),
    ("http://999.0.0.1:1", "not an IP address"),
    ("http://[::1]x", "URL"),
    ("http://user:pw@127.0.0.1:1", "no user:password@"),
])
def test_a_malformed_gateway_url_is_bad_input(raw: str, why: str) -> None:
    with pytest.raises(ConfigError, match="--diagnose must be an http") as info:
        gateway_url(raw)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_a_long_url_is_shortened_in_the_message() -> None:
    with pytest.raises(ConfigError) as info:
        gateway_url("ftp://" + "a" * 10_000)
    assert len(str(info.value)) < 400


def test_bearer_key() -> None:
    assert bearer_key(None) is None and bearer_key("") is None and bearer_key(" \n") is None
    assert bearer_key("k\n") == "k"  # a key read from a file ends with a newline
    assert bearer_key("  s3cret-κλειδί \r\n") == "s3cret-κλειδί"
    for bad in ("a\r\nX-Evil: 1", "k\x00", "k\x7fk", "a\tb"):
        with pytest.raises(ConfigError, match="control or non-printable character") as info:
            bearer_key(bad)
        assert bad.strip() not in str(info.value)  # the key is a secret: never echoed


def test_failure_reason_is_never_empty_and_one_line() -> None:
    assert failure_reason(TimeoutError(), 5.0) == "timed out after 5 s"
    assert failure_reason(TimeoutError(), 0.25) == "timed out after 0.25 s"
    assert failure_reason(OSError(), 5.0) == "OSError"
    assert failure_reason(ValueError("two\nlines\r\n  here"), 5.0) == "two lines here"
    too_large = "the answer is larger than 8 MiB"
    assert failure_reason(BodyTooLarge(too_large), 5.0) == too_large
    assert len(failure_reason(ValueError("x" * 10_000), 5.0)) <= 201


def test_replica_labels_are_unique_printable_and_short() -> None:
    workers = [{"id": "x"}, {"id": "x"}, {}, {"id": None}, {"id": 7}, {"id": True}, {"id": "\x1b[31mred"},
               {"id": "y" * 500}, {"id": ""}, {"id": "x#1"}]
    labels = replica_labels(workers)
    assert labels[:7] == ["x", "x#1", "#2", "#3", "7", "#5", "?[31mred"]
    assert labels[7] == "y" * MAX_LABEL_CHARS and labels[8] == "#8" and labels[9] == "x#1#9"
    assert len(set(labels)) == len(labels)


def test_health_is_matched_by_position_not_by_id() -> None:
    """Two workers share the id "x"; the healthy one stays healthy (a dict by id made both down)."""
    watched = [{"id": "x", "url": "http://a"}, {"id": "x", "url": "http://b"}]
    final = [{"id": "x", "url": "http://a", "healthy": True},
             {"id": "x", "url": "http://b", "healthy": False}]
    assert healthy_at_end(watched, final) == [True, False]
    assert healthy_at_end(watched, final[::-1]) == [True, False]  # reordered: matched by URL
    assert healthy_at_end(watched, final[:1]) == [True, False]  # b left the gateway: down
    odd = [{"url": "http://a", "healthy": float("nan")}, {"url": "http://b", "healthy": "true"}]
    assert healthy_at_end(watched, odd) == [False, False]  # only JSON true is healthy
