"""Sampling a request runs with: request > the model's generation_config.json > API defaults, and
vLLM's epsilon rules for tiny temperatures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dpserve.config import ConfigError
from dpserve.protocol import parse_chat_request
from dpserve.serving.sampling_defaults import (
    MIN_SAMPLING_TEMPERATURE,
    SamplingDefaults,
    capped_max_tokens,
    load_sampling_defaults,
    sampling_params,
)

SMOLLM = SamplingDefaults(temperature=0.2, top_p=0.9)


def fields(**body: Any) -> Any:
    return parse_chat_request({"messages": [{"role": "user", "content": "hi"}], **body}).fields


def test_left_out_fields_take_the_models_defaults_and_given_ones_win() -> None:
    p = sampling_params(fields(), SMOLLM, 16)
    assert (p.temperature, p.top_p, p.top_k) == (0.2, 0.9, None)
    p = sampling_params(fields(temperature=0.7, top_p=1.0), SMOLLM, 16)
    assert (p.temperature, p.top_p) == (0.7, 1.0)
    p = sampling_params(fields(), SamplingDefaults(), 16)  # no generation config: the API's
    assert (p.temperature, p.top_p, p.top_k) == (1.0, 1.0, None)


def test_top_k_minus_one_turns_off_a_default_top_k() -> None:
    defaults = SamplingDefaults(top_k=20)
    assert sampling_params(fields(), defaults, 16).top_k == 20
    assert sampling_params(fields(top_k=-1), defaults, 16).top_k is None


@pytest.mark.parametrize("temperature", [0.0, 1e-40, 5e-324, 9.99e-6])
def test_temperatures_below_the_epsilon_are_greedy(temperature: float) -> None:
    p = sampling_params(fields(temperature=temperature, top_p=0.5, top_k=3), SMOLLM, 16)
    assert (p.temperature, p.top_p, p.top_k) == (0.0, 1.0, None)


@pytest.mark.parametrize("temperature", [1e-5, 1e-3, 0.0099])
def test_tiny_positive_temperatures_are_raised_to_vllms_floor(temperature: float) -> None:
    p = sampling_params(fields(temperature=temperature), SMOLLM, 16)
    assert p.temperature == MIN_SAMPLING_TEMPERATURE


def test_max_new_tokens_caps_every_request() -> None:
    capped = SamplingDefaults(max_tokens=32)
    assert capped_max_tokens(100, capped) == 32
    assert capped_max_tokens(8, capped) == 8
    assert capped_max_tokens(100, SamplingDefaults()) == 100


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    return tmp_path


def test_auto_reads_the_model_directory_like_vllm(tmp_path: Path) -> None:
    write_config(tmp_path, {"eos_token_id": 2, "temperature": 0.2, "top_p": 0.9, "top_k": 50,
                            "max_new_tokens": 64, "do_sample": True})
    defaults = load_sampling_defaults("auto", tmp_path)
    # top_k 50 is transformers' own default: vLLM reads only differences from it
    assert defaults == SamplingDefaults(temperature=0.2, top_p=0.9, top_k=None, max_tokens=64)
    assert load_sampling_defaults("vllm", tmp_path) == SamplingDefaults()
    assert load_sampling_defaults("auto", tmp_path / "missing") == SamplingDefaults()


def test_a_given_directory_must_hold_a_valid_file(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    write_config(other, {"temperature": 0.5})
    assert load_sampling_defaults(str(other), tmp_path / "model").temperature == 0.5
    with pytest.raises(ConfigError, match=r"no generation_config\.json"):
        load_sampling_defaults(str(tmp_path / "nowhere"), tmp_path)
    write_config(tmp_path, {"top_p": 0})
    with pytest.raises(ConfigError, match="top_p"):
        load_sampling_defaults("auto", tmp_path)


def test_seed_stops_and_ignore_eos_pass_through() -> None:
    p = sampling_params(fields(seed=-5, stop_token_ids=[7], ignore_eos=True), SMOLLM, 9)
    assert (p.seed, p.stop_token_ids, p.ignore_eos, p.max_tokens) == (-5, (7,), True, 9)
