"""BenchConfig validation and the closed/open loop in-flight cap; flags parse through the CLI."""

from __future__ import annotations

import pytest

from dpserve.bench.config import DEFAULT_CLOSED_LOOP_CONCURRENCY, BenchConfig
from dpserve.config import ConfigError, parse_config


def test_in_flight_cap() -> None:
    assert BenchConfig().max_in_flight == DEFAULT_CLOSED_LOOP_CONCURRENCY
    assert BenchConfig(concurrency=3).max_in_flight == 3
    assert BenchConfig(request_rate=5.0).max_in_flight is None
    assert BenchConfig(request_rate=5.0, concurrency=2).max_in_flight == 2


@pytest.mark.parametrize("kwargs", [{"concurrency": 0}, {"request_rate": 0.0}, {"range_ratio": 1.0},
                                    {"url": "localhost:8000"}, {"num_prompts": 0}, {"burstiness": 0},
                                    {"slo_ttft_ms": -1.0}])
def test_invalid(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        BenchConfig(**kwargs)


def test_cli_flags() -> None:
    config, _ = parse_config(BenchConfig, ["--workload", "shared-prefix", "--request-rate", "2.5",
                                           "--metrics-urls", "http://a", "http://b", "--no-stream",
                                           "--ignore-eos"], "dpserve bench")
    assert config.workload == "shared-prefix" and config.request_rate == 2.5
    assert config.metrics_urls == ("http://a", "http://b")
    assert config.stream is False and config.ignore_eos is True
    with pytest.raises(SystemExit):  # argparse rejects the choice, listing the valid ones
        parse_config(BenchConfig, ["--workload", "nope"], "dpserve bench")
    with pytest.raises(ConfigError, match="valid"):
        parse_config(BenchConfig, ["--concurency", "3"], "dpserve bench")
