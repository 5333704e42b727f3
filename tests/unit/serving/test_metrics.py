"""/metrics text: vLLM names, model label, cumulative histogram buckets."""

from __future__ import annotations

from dpserve.serving.engine_client import EngineStats
from dpserve.serving.metrics import ReplicaMetrics


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_render_has_every_vllm_series_with_values() -> None:
    m = ReplicaMetrics("smol")
    m.record_first_token(0.03)
    m.record_finished(num_prompt_tokens=10, num_generated_tokens=4, finish_reason="length", e2e_s=0.4)
    stats = EngineStats(num_running=2, num_waiting=3, kv_cache_usage=0.25, prefix_cache_queries=100,
                        prefix_cache_hits=64)
    s = samples(m.render(stats))
    lb = 'model_name="smol"'
    assert s[f"vllm:num_requests_running{{{lb}}}"] == 2
    assert s[f"vllm:num_requests_waiting{{{lb}}}"] == 3
    assert s[f"vllm:kv_cache_usage_perc{{{lb}}}"] == 0.25
    assert s[f"vllm:prefix_cache_queries_total{{{lb}}}"] == 100
    assert s[f"vllm:prefix_cache_hits_total{{{lb}}}"] == 64
    assert s[f"vllm:prompt_tokens_total{{{lb}}}"] == 10
    assert s[f"vllm:generation_tokens_total{{{lb}}}"] == 4
    assert s[f'vllm:request_success_total{{{lb},finished_reason="length"}}'] == 1
    assert s[f"vllm:time_to_first_token_seconds_count{{{lb}}}"] == 1
    assert s[f'vllm:time_to_first_token_seconds_bucket{{{lb},le="0.02"}}'] == 0
    assert s[f'vllm:time_to_first_token_seconds_bucket{{{lb},le="0.04"}}'] == 1
    assert s[f'vllm:e2e_request_latency_seconds_bucket{{{lb},le="0.5"}}'] == 1
    assert s[f"vllm:e2e_request_latency_seconds_sum{{{lb}}}"] == 0.4


def test_type_lines_declare_counters_and_histograms() -> None:
    text = ReplicaMetrics("m").render(EngineStats())
    assert "# TYPE vllm:prompt_tokens_total counter" in text
    assert "# TYPE vllm:num_requests_running gauge" in text
    assert "# TYPE vllm:e2e_request_latency_seconds histogram" in text


def test_model_name_label_is_escaped() -> None:
    text = ReplicaMetrics('a"b').render(EngineStats())
    assert 'model_name="a\\"b"' in text


def test_inter_token_latency_spreads_a_merged_delta() -> None:
    m = ReplicaMetrics("m")
    m.record_inter_token(0.06, 3)
    s = samples(m.render(EngineStats()))
    assert s['vllm:time_per_output_token_seconds_bucket{model_name="m",le="0.01"}'] == 0
    assert s['vllm:time_per_output_token_seconds_bucket{model_name="m",le="0.025"}'] == 3
    assert s['vllm:time_per_output_token_seconds_count{model_name="m"}'] == 3


def test_max_num_seqs_gauge_only_when_the_engine_has_one() -> None:
    m = ReplicaMetrics("smol")
    assert s_of(m, EngineStats(max_num_seqs=64))['dpserve:max_num_seqs{model_name="smol"}'] == 64
    assert not any(k.startswith("dpserve:max_num_seqs") for k in s_of(m, EngineStats()))


def s_of(m: ReplicaMetrics, stats: EngineStats) -> dict[str, float]:
    return samples(m.render(stats))
