"""Config parsing and parameter counts against the published sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpserve.config import SHORT_REPR_CHARS
from dpserve.model_store.bundled import BUNDLED_MODELS, BundledModel
from dpserve.planner.architecture import ArchitectureError, arch_from_hf_config
from dpserve.planner.catalog import BUILTIN_CONFIGS, resolve_arch
from dpserve.planner.formulas import param_counts

LLAMA = BUILTIN_CONFIGS["llama-3.1-8b"]
MIXTRAL = BUILTIN_CONFIGS["mixtral-8x7b"]
DEEPSEEK = BUILTIN_CONFIGS["deepseek-v3"]

# Sizes the model cards publish (billions of parameters; DeepSeek-V3: the main model without its
# multi-token-prediction module, 671B total, 36.6B activated per token incl. the output head;
# SmolLM2-135M: its checkpoint's 134,515,008).
PUBLISHED = {"smollm2-135m": 0.1345, "llama-3.1-8b": 8.03, "llama-3.1-70b": 70.6, "llama-3.1-405b": 405.9,
             "qwen3-14b": 14.8, "qwen3-32b": 32.8, "mixtral-8x7b": 46.7, "deepseek-v3": 671.0}


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


@pytest.mark.parametrize(("cfg", "message"), [
    # checked before hidden // heads (a ZeroDivisionError before)
    ({**LLAMA, "num_attention_heads": 0}, "num_attention_heads must be >= 1, got 0"),
    # bounded: float(10**200) products overflowed in the formulas
    ({**LLAMA, "hidden_size": 10**200}, r"hidden_size must be in 1\.\.10000000"),
    ({**LLAMA, "num_hidden_layers": 10**12}, r"num_hidden_layers must be in 1\.\.10000000"),
    ({**LLAMA, "vocab_size": 10**30}, "vocab_size must be in"),
    # negative MoE/MLA counts: overflow in expert_share, NaN or negative "fitting" predictions before
    ({**MIXTRAL, "num_local_experts": -4, "num_experts_per_tok": 1},
     r"n_routed_experts \(num_local_experts\)"),
    ({**DEEPSEEK, "n_routed_experts": -1}, r"n_routed_experts .* must be in 0\.\.10000000, got -1"),
    ({**DEEPSEEK, "n_shared_experts": -100}, "n_shared_experts must be in 0"),
    ({**MIXTRAL, "moe_intermediate_size": -14336}, "moe_intermediate_size must be in 0"),
    ({**DEEPSEEK, "q_lora_rank": -10000}, "q_lora_rank must be in 0"),
    ({**DEEPSEEK, "kv_lora_rank": -512}, "kv_lora_rank must be in 0"),  # silently not MLA before
    ({**DEEPSEEK, "qk_rope_head_dim": -64}, "qk_rope_head_dim must be in 0"),
    # JSON bools only: bool("false") is True
    ({**LLAMA, "tie_word_embeddings": "false"}, "'tie_word_embeddings' must be true or false, got 'false'"),
    ({**LLAMA, "attention_bias": 1}, "'attention_bias' must be true or false"),
    ({**LLAMA, "model_type": ["llama"]}, "'model_type' must be a string"),
])
def test_out_of_range_fields_are_named(cfg: dict[str, object], message: str) -> None:
    with pytest.raises(ArchitectureError, match=message):
        arch_from_hf_config(cfg, "x")


def test_a_huge_value_is_not_copied_into_the_message() -> None:
    with pytest.raises(ArchitectureError) as err:
        arch_from_hf_config({**LLAMA, "hidden_size": list(range(1_000_000))}, "x")
    assert "must be an integer" in str(err.value) and len(str(err.value)) < SHORT_REPR_CHARS + 60


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_deeply_nested_json_is_an_architecture_error(tmp_path: Path, opening: str) -> None:
    (tmp_path / "config.json").write_text(opening * 100_000)
    with pytest.raises(ArchitectureError, match="nested too deeply"):
        resolve_arch(str(tmp_path))


def test_the_bundled_model_needs_neither_its_package_nor_a_conversion(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("plan converted the bundled model to read its shapes")

    monkeypatch.setattr("dpserve.model_store.resolve_model", no_conversion)
    monkeypatch.setattr(BundledModel, "locate", lambda self: None)  # the package is missing
    arch = resolve_arch("SMOLLM2-135M")  # case-insensitive like the other built-ins
    assert (arch.hidden_size, arch.num_heads, arch.num_kv_heads) == (576, 9, 3) and arch.tie_word_embeddings


def test_another_bundled_model_that_cannot_be_prepared_is_an_architecture_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = BundledModel("tiny-x", "no_such_package_x", "no-such-package-x==1", "x.gguf")
    monkeypatch.setitem(BUNDLED_MODELS, "tiny-x", fake)
    monkeypatch.setenv("DPSERVE_CACHE_DIR", str(tmp_path))
    with pytest.raises(ArchitectureError, match="needs the package no-such-package-x==1"):
        resolve_arch("tiny-x")
    cache_file = tmp_path / "cachefile"
    cache_file.write_text("")
    monkeypatch.setenv("DPSERVE_CACHE_DIR", str(cache_file))  # a file where the cache directory goes
    monkeypatch.setattr(BundledModel, "locate", lambda self: tmp_path / "x.gguf")
    with pytest.raises(ArchitectureError, match="cannot prepare the bundled model 'tiny-x'"):
        resolve_arch("tiny-x")


@pytest.mark.parametrize(("model", "message"), [
    ("", "--model is empty"),  # Path("") is the current directory
    ("a" * 5000, "not a usable path \\(File name too long\\)"),
    ("~no-such-user-x/m", "not a usable path"),
])
def test_unusable_model_names(model: str, message: str) -> None:
    with pytest.raises(ArchitectureError, match=message):
        resolve_arch(model)


def test_gemma_ties_its_embeddings_unless_told_otherwise() -> None:
    """transformers' Gemma configs default tie_word_embeddings to True, and google/gemma-2-9b's
    config.json leaves it out: 9.24B parameters (its model card), not 10.16B (review_plan2 8)."""
    gemma2 = {"model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336,
              "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "num_hidden_layers": 42,
              "vocab_size": 256000}
    assert round(param_counts(arch_from_hf_config(gemma2, "gemma-2-9b")).total / 1e9, 2) == 9.24
    assert not arch_from_hf_config({**gemma2, "tie_word_embeddings": False}, "g").tie_word_embeddings
