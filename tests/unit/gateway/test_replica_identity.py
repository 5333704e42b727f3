"""Replica identity: facts read from model cards and info gauges; a differing newcomer is refused."""

from __future__ import annotations

import pytest

from dpserve.gateway.replica_identity import differences, identity, info_labels, refusal

VLLM_METRICS = """# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="fp8",num_gpu_blocks="661"} 1.0
vllm:num_requests_running{model_name="m"} 0.0
"""


def test_info_labels_keep_only_what_must_match() -> None:
    assert info_labels(VLLM_METRICS) == {"cache_dtype": "fp8"}  # block counts may differ harmlessly
    text = 'dpserve:replica_info{dtype="bfloat16",quantization="awq",tensor_parallel_size="2"} 1\n'
    assert info_labels(text) == {"dtype": "bfloat16", "quantization": "awq", "tensor_parallel_size": "2"}
    assert info_labels("vllm:num_requests_running 3\n") == {}


@pytest.mark.timeout(30)
def test_a_label_set_of_one_long_word_is_read_in_linear_time() -> None:
    """A replica's /metrics (up to http_body's 8 MiB) is parsed on the gateway's loop: a 1 MiB run of
    word characters took the quadratic pattern about 100 minutes; now it is a scan."""
    assert info_labels("vllm:cache_config_info{" + "a" * (1 << 20) + "} 1\n") == {}
    assert info_labels('vllm:cache_config_info{' + "a" * 100_000 + ',cache_dtype="fp8"} 1\n') == {
        "cache_dtype": "fp8"}


def test_identity_per_served_model() -> None:
    cards = [{"id": "llama", "root": "/m/llama", "max_model_len": 8192}, {"id": "alias-less"}]
    assert identity(cards, {"cache_dtype": "auto"}) == {
        "llama": {"root": "/m/llama", "max_model_len": "8192", "cache_dtype": "auto"},
        "alias-less": {"cache_dtype": "auto"}}


def test_only_facts_both_publish_are_compared() -> None:
    assert differences({"max_model_len": "4096", "dtype": "fp8"}, {"max_model_len": "8192"}) == [
        "max_model_len 4096 ≠ 8192"]
    assert differences({"dtype": "fp8"}, {"max_model_len": "8192"}) == []


def test_newcomer_is_refused_only_on_a_shared_model_that_differs() -> None:
    w0 = {"llama": {"max_model_len": "8192", "cache_dtype": "auto"}}
    same = {"llama": {"max_model_len": "8192", "cache_dtype": "auto"}}
    fp8 = {"llama": {"max_model_len": "8192", "cache_dtype": "fp8"}}
    other_model = {"qwen": {"max_model_len": "4096"}}
    assert refusal(same, [("w0", w0)]) is None
    assert refusal(other_model, [("w0", w0)]) is None  # another name: nothing to agree on
    assert refusal(fp8, [("w0", w0)]) == "serves 'llama' unlike w0: cache_dtype fp8 ≠ auto"
    assert refusal(fp8, []) is None  # the first one sets the standard
