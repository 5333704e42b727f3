"""Replica URLs and weights: what the gateway accepts for --worker-urls/--worker-weights, POST /workers."""

from __future__ import annotations

import pytest

from dpserve.config import ConfigError, build_config
from dpserve.gateway.config import GatewayConfig
from dpserve.gateway.worker import MAX_WORKER_WEIGHT, check_worker_url, check_worker_weight


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:8100", "http://127.0.0.1:8100"),
    ("http://127.0.0.1:8100/", "http://127.0.0.1:8100"),
    (" http://localhost ", "http://localhost"),
])
def test_accepted(url: str, expected: str) -> None:
    assert check_worker_url(url) == expected


@pytest.mark.parametrize(("url", "problem"), [
    ("http://", "no host"),
    ("http://127.0.0.1:99999", "not a valid URL"),
    ("http://127.0.0.1:8100/v1", "without a path"),
    ("http://127.0.0.1:8100?x=1", "without a path"),
    ("https://127.0.0.1:8100", "not an http:// URL"),
    ("127.0.0.1:8100", "not an http:// URL"),
])
def test_rejected_with_the_reason(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_worker_url(url)


def test_config_rejects_a_url_with_a_path() -> None:
    with pytest.raises(ConfigError, match=r"--worker-urls: .*without a path"):
        build_config(GatewayConfig, {"worker_urls": ("http://127.0.0.1:8100/v1",)})


@pytest.mark.parametrize("weight", [0, -1, 100.5, 1000, float("nan"), float("inf"), True, "2", None])
def test_weights_outside_the_documented_range_are_refused(weight: object) -> None:
    with pytest.raises(ValueError, match="weight must be"):
        check_worker_weight(weight)


def test_weights_inside_the_range_pass_as_floats() -> None:
    assert check_worker_weight(1) == 1.0 and check_worker_weight(MAX_WORKER_WEIGHT) == MAX_WORKER_WEIGHT
