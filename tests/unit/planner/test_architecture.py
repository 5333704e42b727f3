"""Config parsing and parameter counts against the published sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpserve.planner.architecture import ArchitectureError, arch_from_hf_config
from dpserve.planner.catalog import BUILTIN_CONFIGS, resolve_arch
from dpserve.planner.formulas import param_counts

# Sizes the model cards publish (billions of parameters; DeepSeek-V3: the main model without its
# multi-token-prediction module, 671B total, 36.6B activated per token incl. the output head).
PUBLISHED = {"llama-3.1-8b": 8.03, "llama-3.1-70b": 70.6, "llama-3.1-405b": 405.9, "qwen3-14b": 14.8,
             "qwen3-32b": 32.8, "mixtral-8x7b": 46.7, "deepseek-v3": 671.0}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_within_one_percent_of_published(name: str) -> None:
    total = param_counts(resolve_arch(name)).total / 1e9
    assert total == pytest.approx(PUBLISHED[name], rel=0.01)


def test_llama_8b_exact_count_and_moe_active_params() -> None:
    assert param_counts(resolve_arch("llama-3.1-8b")).total == 8_030_261_248  # the HF checkpoint's numel
    assert param_counts(resolve_arch("deepseek-v3")).matmul_per_token / 1e9 == pytest.approx(36.6, rel=0.01)
    assert param_counts(resolve_arch("mixtral-8x7b")).matmul_per_token / 1e9 == pytest.approx(12.9, rel=0.02)


def test_moe_and_mla_fields_are_read() -> None:
    ds = resolve_arch("DeepSeek-V3")
    assert ds.is_mla and ds.is_moe and ds.num_moe_layers == 58 and ds.kv_lora_rank == 512
    mx = resolve_arch("mixtral-8x7b")
    assert mx.is_moe and not mx.is_mla and (mx.num_experts, mx.experts_per_token) == (8, 2)
    assert resolve_arch("qwen3-32b").qk_norm and not resolve_arch("llama-3.1-8b").qk_norm


def test_config_file_and_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(BUILTIN_CONFIGS["llama-3.1-8b"]))
    assert resolve_arch(str(tmp_path)).hidden_size == 4096
    assert resolve_arch(str(tmp_path / "config.json")).num_layers == 32


@pytest.mark.parametrize(("cfg", "message"), [
    ({"hidden_size": 8}, "no 'num_attention_heads'"),
    ({**BUILTIN_CONFIGS["llama-3.1-8b"], "num_hidden_layers": "32"}, "must be an integer"),
    ({**BUILTIN_CONFIGS["llama-3.1-8b"], "num_key_value_heads": 5}, "not a multiple"),
    ({**BUILTIN_CONFIGS["mixtral-8x7b"], "num_experts_per_tok": 9}, "num_experts_per_tok"),
    ([1, 2], "JSON object"),
])
def test_malformed_configs_say_what_is_wrong(cfg: object, message: str) -> None:
    with pytest.raises(ArchitectureError, match=message):
        arch_from_hf_config(cfg, "x")  # type: ignore[arg-type]


def test_unknown_model_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(ArchitectureError, match=r"unknown model 'gpt-5'.*llama-3\.1-8b"):
        resolve_arch("gpt-5")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ArchitectureError, match="not valid JSON"):
        resolve_arch(str(tmp_path))
