"""The formulas module: exact arithmetic where it is arithmetic, stated behaviour where it is a model."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from dpserve.planner import formulas as f
from dpserve.planner.catalog import resolve_arch
from dpserve.planner.hardware import get_gpu

H100 = get_gpu("H100-80GB")
ASM = f.Assumptions()


def _safetensors_numel(path: Path) -> int:
    with path.open("rb") as fh:
        header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


@pytest.mark.model
def test_bundled_model_memory_is_exact(bundled_model_dir: Path) -> None:
    """SmolLM2-135M (tied embeddings, 9 heads / 3 KV heads of 64): every count checks against its
    converted checkpoint or by hand."""
    arch = resolve_arch("smollm2-135m")
    counts = f.param_counts(arch)
    assert counts.total == _safetensors_numel(bundled_model_dir / "model.safetensors") == 134_515_008
    assert counts.lm_head == 0 and counts.streamed == counts.total  # tied: the embedding is the head
    assert f.kv_bytes_per_token(arch, f.KV_BYTES["bf16"]) == 2 * 30 * 3 * 64 * 2 == 23_040
    # TP=3 splits the 3 KV heads; TP beyond them cannot split further
    assert (f.kv_shards(arch, 3, False), f.kv_shards(arch, 6, False)) == (3, 3)
    assert f.weight_bytes_per_gpu(counts, arch.num_layers, 1, 1, False, 2.0) == 2 * 134_515_008
    assert f.weight_bytes_per_gpu(counts, arch.num_layers, 1, 4, False, 2.0) == pytest.approx(
        2 * 134_515_008 * 8 / 30)  # the largest of 4 stages holds ceil(30/4) = 8 layers


def test_llama_8b_memory_budget_on_h100() -> None:
    arch = resolve_arch("llama-3.1-8b")
    assert f.kv_bytes_per_token(arch, 2.0) == 131_072  # 2 × 32 layers × 8 heads × 128 × 2 B
    mem = f.memory_budget(arch, H100, 1, 1, False, 2.0, 2.0, ASM)
    assert mem.weights_bytes == 2 * 8_030_261_248
    expected_free = 80e9 * 0.9 - ASM.runtime_reserve_bytes - mem.weights_bytes - mem.activation_bytes
    assert mem.kv_bytes == pytest.approx(expected_free)
    assert mem.kv_tokens == int(expected_free // 131_072)
    tp2 = f.memory_budget(arch, H100, 2, 1, False, 2.0, 2.0, ASM)
    assert tp2.kv_tokens > 2 * mem.kv_tokens  # half the weights per GPU, half the KV per token


def test_mla_kv_is_one_latent_per_layer_and_dp_attention_multiplies_the_room() -> None:
    ds = resolve_arch("deepseek-v3")
    assert f.kv_bytes_per_token(ds, 2.0) == 61 * (512 + 64) * 2
    assert f.kv_shards(ds, 8, False) == 1 and f.kv_shards(ds, 8, True) == 8


def test_ring_allreduce_cost() -> None:
    link, lat = 100e9, 1e-6
    assert f.allreduce_s(1, 1e6, link, lat) == 0.0
    assert f.allreduce_s(4, 1e6, link, lat) == pytest.approx(6 * 1e-6 + 1.5 * 1e6 / link)
    assert f.allreduce_s(8, 0.0, link, lat) == pytest.approx(14e-6)
    assert f.allreduce_s(2, 0.0, link, 0.5e-6, launch_s=5e-6) == pytest.approx(6e-6)  # NCCL on 2 × H100
    assert f.allreduce_s(1, 0.0, link, 0.5e-6, launch_s=5e-6) == 0.0


def test_nvls_moves_each_byte_once_where_that_beats_the_ring() -> None:
    ring, nvls, n = 360e9, 270e9, 8e6  # H100: 80% and 60% of 450 GB/s
    assert f.allreduce_s(2, n, ring, 0.0, nvls_bytes_s=nvls) == pytest.approx(n / ring)  # ring: 1× the bytes
    assert f.allreduce_s(8, n, ring, 0.0, nvls_bytes_s=nvls) == pytest.approx(n / nvls)  # ring would be 1.75×
    assert f.layout_links(get_gpu("A100-80GB"), 8, 1, 8, ASM).tp_nvls_bytes_s is None
    assert f.layout_links(H100, 8, 1, 8, ASM).tp_nvls_bytes_s == pytest.approx(0.6 * 450e9)


def test_links_carry_the_launch_cost_into_every_allreduce() -> None:
    links = f.layout_links(get_gpu("H100-80GB"), 2, 1, 8, ASM)
    assert links.tp_launch_s == ASM.allreduce_launch_s == 5e-6
    full = f.ReplicaCosts(1e-3, 10e-6, 8e-3, 0.0, 20e-6, 20e-6, 40e-9)
    two = f.shard_costs(full, tp=2, pp=1, num_layers=32, hidden_size=4096, kv_split=2, links=links)
    assert two.comm_step_s == pytest.approx(64 * (5e-6 + 2 * 0.5e-6))


def test_engine_limits_follow_vllm_v1_per_gpu() -> None:
    assert f.engine_limits(ASM, get_gpu("H100-80GB")) == (1024, 8192)
    assert f.engine_limits(ASM, get_gpu("B200")) == (1024, 8192)
    assert f.engine_limits(ASM, get_gpu("A100-80GB")) == (256, 2048)  # vLLM excludes the A100 by name
    assert f.engine_limits(ASM, get_gpu("L40S")) == (256, 2048)
    given = f.Assumptions(max_num_seqs=64, max_num_batched_tokens=4096)
    assert f.engine_limits(given, get_gpu("H100-80GB")) == (64, 4096)


def test_expert_share() -> None:
    assert f.expert_share(0, 8, 2) == 0.0 and f.expert_share(1, 8, 2) == pytest.approx(0.25)
    assert f.expert_share(10_000, 256, 8) == pytest.approx(1.0)
    assert f.expert_share(5, 0, 0) == 0.0


def _costs(tp: int = 1, pp: int = 1) -> f.StepCosts:
    full = f.ReplicaCosts(host_step_s=1e-3, host_seq_s=10e-6, weights_s=8e-3, experts_s=0.0,
                          prefill_token_s=20e-6, decode_token_s=20e-6, context_token_s=40e-9)
    links = f.Links(100e9, 1e-6, 100e9, 10e-6)
    return f.shard_costs(full, tp=tp, pp=pp, num_layers=32, hidden_size=4096, kv_split=min(tp, 8),
                         links=links)


def test_sharding_divides_device_terms_only() -> None:
    one, four = _costs(), _costs(tp=4)
    assert (four.host_step_s, four.host_seq_s) == (one.host_step_s, one.host_seq_s)
    assert four.weights_s == pytest.approx(one.weights_s / 4)
    assert four.context_token_s == pytest.approx(one.context_token_s / 4)
    assert four.comm_step_s == pytest.approx(64 * 6e-6)  # 2 all-reduces × 32 layers, 6 ring steps each
    assert four.comm_token_s == pytest.approx(64 * 1.5 * 4096 * 2 / 100e9)
    assert one.comm_step_s == one.comm_token_s == 0.0


def test_step_time_is_host_plus_the_roofline_of_weights_and_math() -> None:
    """Host work, then the linear layers' max(weight read, math) (the loads overlap the MMAs), then
    attention's KV read: small batches hide their math under the weight read, big ones do not."""
    c = _costs()
    host = 1e-3 + 3 * 10e-6
    assert f.step_time_s(c, 100, 3, 3000) == pytest.approx(host + 8e-3 + 3000 * 40e-9)
    assert f.step_time_s(c, 1000, 3, 3000) == pytest.approx(host + 1000 * 20e-6 + 3 * 20e-6 + 3000 * 40e-9)
    parts = f.step_parts(c, 100, 3, 3000)
    assert parts.memory_s == pytest.approx(8e-3 + 3000 * 40e-9)  # the demands, as if alone
    assert parts.compute_s == pytest.approx(100 * 20e-6 + 3 * 20e-6)
    assert parts.device_s < parts.memory_s + parts.compute_s
    assert f.step_time_s(c, 0, 0, 0) == 0.0


def test_pipeline_step_and_its_bubble() -> None:
    """PP=2: one sequence crosses both half-stages (no faster than PP=1); with ≥ 2 sequences the two
    micro-batches overlap, so per-sequence math is split but every stage still streams its weights."""
    one, two = _costs(), _costs(pp=2)
    lone = f.step_time_s(two, 0, 1, 1000)
    assert lone == pytest.approx(f.step_time_s(one, 0, 1, 1000) + 10e-6 + 4096 * 2 / 100e9)
    many = f.step_parts(two, 0, 64, 64_000)
    assert many.compute_s == pytest.approx(2 * 64 / 2 * 20e-6 / 2)


def test_prefill_chunks_and_pp_gives_one_prompt_no_speedup() -> None:
    shape = f.Shape(prompt_len=10_000, output_len=100)
    c = _costs()
    chunked = f.prefill_s(c, shape, 0, 4096)  # 3 chunks of ≤ 4096
    assert chunked == pytest.approx(3 * f.step_time_s(c, 4096, 0, 0))
    short = f.Shape(prompt_len=1000, output_len=100)
    assert f.prefill_s(_costs(pp=4), short, 0, 8192) >= f.prefill_s(c, short, 0, 8192) * 0.99


def _erlang_c_full(c: int, a: float) -> float:
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b / (1 - a / c * (1 - b))


@pytest.mark.parametrize(("c", "a"), [(256, 200.0), (256, 250.0), (5000, 4800.0), (100_000, 99_000.0)])
def test_erlang_c_shortcut_matches_the_full_recursion(c: int, a: float) -> None:
    assert f.erlang_c(c, a) == pytest.approx(_erlang_c_full(c, a), rel=1e-9)


def test_erlang_c_and_wait_quantiles() -> None:
    assert f.erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = utilisation
    assert f.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert f.erlang_c(4, 4.0) == 1.0 and f.erlang_c(4, 0.0) == 0.0
    # M/M/1 at ρ=0.5, S=1: P(W > t) = 0.5 e^(−0.5 t); p99 = 2 ln 50, halved for deterministic service
    assert f.queue_wait_quantile_s(0.99, 1, 0.5, 1.0) == pytest.approx(0.5 * 2 * math.log(50))
    assert f.queue_wait_quantile_s(0.5, 1, 0.5, 1.0) == 0.0  # half the arrivals do not wait
    assert f.queue_wait_quantile_s(0.99, 1, 1.0, 1.0) == math.inf


def test_littles_law_holds_in_the_open_loop_solution() -> None:
    c, shape = _costs(), f.Shape(512, 128)
    batch = f.open_loop_batch(c, 20.0, 256, shape, 8192)
    assert batch is not None and 0 < batch < 256
    assert batch == pytest.approx(20.0 * f.service_s(c, batch, shape, 8192), rel=1e-6)
    assert f.open_loop_batch(c, 1e6, 256, shape, 8192) is None  # beyond a full batch: overloaded


def test_closed_loop_queue_beyond_the_slots() -> None:
    c, shape = _costs(), f.Shape(512, 128)
    under = f.closed_loop_point(c, 8, 16, shape, 8192)
    over = f.closed_loop_point(c, 32, 16, shape, 8192)
    service = f.service_s(c, 16, shape, 8192)
    assert under.batch == 8 and over.batch == 16
    assert over.ttft_p50_s - f.closed_loop_point(c, 16, 16, shape, 8192).ttft_p50_s == pytest.approx(service)
    assert over.output_tok_s == pytest.approx(16 * 128 / service)


def test_steady_state_counts_each_prompt_once() -> None:
    """Over a request's life the replica prefills the prompts of the requests that arrive meanwhile
    (rate × life), not its own again."""
    c, shape = _costs(), f.Shape(2048, 32)
    st = f.steady_state(c, 4, shape, 8192)
    assert st.rate == pytest.approx(4 / (st.prefill_s + 31 * st.step_s))
    assert st.prefill_tokens == pytest.approx(st.rate * 2048 * st.step_s, rel=1e-6)


def test_kv_cache_tokens_from_raw_sizes() -> None:
    gib = f.GIB
    one = f.kv_cache_tokens(80 * gib, 15 * gib, 131_072, 1, 1, 1)
    assert one == int((80 * gib * 0.9 - gib - 15 * gib) // 131_072)
    assert f.kv_cache_tokens(80 * gib, 15 * gib, 131_072, 2, 1, 2) > 2 * one
