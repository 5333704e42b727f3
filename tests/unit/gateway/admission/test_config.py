from pathlib import Path
from typing import Any

import pytest

from dpserve.config import ConfigError, parse_config
from dpserve.gateway.admission import AdmissionConfig


def test_defaults_are_pass_through() -> None:
    cfg = AdmissionConfig()
    assert cfg.worker_cap(2.0) is None
    assert cfg.quota_fail_open is True


def test_flags_parse_into_frozen_config(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    cfg, _ = parse_config(AdmissionConfig, [
        "--max-inflight-per-worker", "4", "--queue-size", "8", "--queue-timeout-s", "2.5",
        "--ttft-slo-ms", "300", "--api-keys", str(keys), "--redis-url", "redis://127.0.0.1:1/0",
        "--no-quota-fail-open", "--priority-header", "x-priority"], "t")
    assert (cfg.max_inflight_per_worker, cfg.queue_size, cfg.queue_timeout_s) == (4, 8, 2.5)
    assert cfg.ttft_slo_ms == 300.0 and cfg.api_keys == keys and not cfg.quota_fail_open
    assert cfg.worker_cap(1.0) == 4 and cfg.worker_cap(0.5) == 2 and cfg.worker_cap(0.01) == 1


@pytest.mark.parametrize("kwargs, fragment", [
    ({"max_inflight_per_worker": 0}, "--max-inflight-per-worker"),
    ({"queue_size": -1}, "--queue-size"),
    ({"queue_timeout_s": 0}, "--queue-timeout-s"),
    ({"ttft_slo_ms": -5.0}, "--ttft-slo-ms"),
    ({"redis_url": "http://x"}, "--redis-url"),
    ({"redis_url": "redis://127.0.0.1:1"}, "--api-keys"),
])
def test_bad_values_name_the_flag(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        AdmissionConfig(**kwargs)
