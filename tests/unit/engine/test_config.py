"""EngineConfig: validation messages and the enforced max_model_len."""

from __future__ import annotations

import pytest

from dpserve.config import ConfigError, parse_config
from dpserve.engine.config import EngineConfig


def test_defaults_and_flags() -> None:
    config, _ = parse_config(EngineConfig, ["--no-enable-prefix-caching", "--kv-cache-tokens", "4096",
                                            "--device", "cpu", "--dtype", "bfloat16"], "dpserve engine")
    assert not config.enable_prefix_caching
    assert config.num_blocks == 256 and config.block_size == 16
    assert config.dtype == "bfloat16" and config.served_model_name is None


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"block_size": 0}, "--block-size"),
    ({"kv_cache_tokens": 8}, "--kv-cache-tokens"),
    ({"max_num_seqs": 0}, "--max-num-seqs"),
    ({"max_num_batched_tokens": 0}, "--max-num-batched-tokens"),
    ({"max_model_len": 1}, "--max-model-len"),
    ({"num_threads": 0}, "--num-threads"),
])
def test_invalid_values_name_the_flag(kwargs: dict[str, int], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        EngineConfig(**kwargs)  # type: ignore[arg-type]


def test_max_model_len_capped_by_model_and_kv_capacity() -> None:
    assert EngineConfig(kv_cache_tokens=16384).resolved_max_model_len(8192) == 8192
    assert EngineConfig(kv_cache_tokens=1000, block_size=16).resolved_max_model_len(8192) == 992
    assert EngineConfig(max_model_len=512).resolved_max_model_len(8192) == 512
    assert EngineConfig(max_model_len=100_000).resolved_max_model_len(8192) == 8192
