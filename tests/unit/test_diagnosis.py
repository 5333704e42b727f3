from __future__ import annotations

from dpserve.diagnosis import (
    ReplicaWindow,
    Slo,
    State,
    diagnose_fleet,
    diagnose_replica,
    middle_scrape,
    window_from_scrapes,
)
from dpserve.prometheus_text import parse_exposition


def w(rid: str, **kw: float | bool | int | str | None) -> ReplicaWindow:
    return ReplicaWindow(rid, **kw)  # type: ignore[arg-type]


def test_replica_states_table() -> None:
    slo = Slo(tpot_s=0.05, ttft_s=1.0)
    cases = [
        (w("r0", healthy=False), State.DOWN),
        (w("r0", running=8, preemptions_per_s=0.2, kv_cache_usage=0.99), State.KV_BOUND),
        (w("r0", running=8, waiting=3, kv_cache_usage=0.95), State.KV_BOUND),
        (w("r0", running=16, waiting=14, kv_cache_usage=0.4, max_num_seqs=16), State.REPLICA_BOUND),
        (w("r0", running=30, waiting=0, tpot_p50_s=0.09), State.REPLICA_BOUND),  # SLO miss at big batch
        (w("r0", running=2, tpot_p50_s=0.09), State.LATENCY_BOUND),  # SLO miss at small batch
        (w("r0", running=1, ttft_p99_s=2.5), State.LATENCY_BOUND),
        (w("r0", running=6, kv_cache_usage=0.3, generation_tokens_per_s=100, tpot_p50_s=0.02), State.OK),
        (w("r0"), State.IDLE),
    ]
    for window, state in cases:
        assert diagnose_replica(window, slo).state is state, window


def test_the_issues_example_words() -> None:
    f = diagnose_replica(w("r2", running=16, waiting=14, kv_cache_usage=0.4, max_num_seqs=16))
    assert f.message == ("r2 is at max-num-seqs (16) with 14 waiting while KV is 40% used: "
                         "replica-bound — add replicas")
    kv = diagnose_replica(w("r1", running=8, preemptions_per_s=0.5, kv_cache_usage=0.98))
    assert "r1 preempts" in kv.message and "KV full" in kv.message
    assert "more KV per replica (TP/PP, a smaller max-model-len, quantization)" in kv.message
    assert kv.evidence["preemptions_per_s"] == 0.5


def test_slo_rules_are_off_without_an_slo() -> None:
    assert diagnose_replica(w("r0", running=2, tpot_p50_s=5.0)).state is State.OK


def test_fleet_replica_bound_names_the_busiest_replica() -> None:
    d = diagnose_fleet([w("r0", running=16, waiting=4, kv_cache_usage=0.4),
                        w("r1", running=16, waiting=14, kv_cache_usage=0.4, max_num_seqs=16),
                        w("r2", running=16, waiting=9, kv_cache_usage=0.5)])
    assert d.fleet.state is State.REPLICA_BOUND and d.bottleneck == "r1"
    assert d.fleet.message == ("r1 is at max-num-seqs (16) with 14 waiting while KV is 40% used: "
                               "the fleet is replica-bound — add replicas")
    assert d.fleet.evidence["replicas_replica_bound"] == 3.0


def test_kv_bound_outranks_replica_bound() -> None:
    d = diagnose_fleet([w("r0", running=16, waiting=30, kv_cache_usage=0.4),
                        w("r1", running=8, preemptions_per_s=1.0, kv_cache_usage=0.99)])
    assert d.fleet.state is State.KV_BOUND and d.bottleneck == "r1"
    assert "the fleet is KV-bound" in d.fleet.message


def test_uneven_load_is_imbalance_not_a_reason_to_add_replicas() -> None:
    d = diagnose_fleet([w("r0", running=16, waiting=14, kv_cache_usage=0.4), w("r1"), w("r2")])
    assert d.fleet.state is State.IMBALANCED and d.bottleneck == "r0"
    assert "r1, r2 have room" in d.fleet.message


def test_fleet_ok_idle_and_down() -> None:
    ok = diagnose_fleet([w("r0", running=3, generation_tokens_per_s=50), w("r1")])
    assert ok.fleet.state is State.OK and ok.bottleneck is None
    assert diagnose_fleet([w("r0"), w("r1")]).fleet.state is State.IDLE
    down = diagnose_fleet([w("r0", healthy=False), w("r1", healthy=False)])
    assert down.fleet.state is State.DOWN and down.fleet.message == "no replica is healthy"
    part = diagnose_fleet([w("r0", healthy=False), w("r1", running=2, generation_tokens_per_s=9)])
    assert part.fleet.state is State.OK and part.fleet.message.endswith("(1 of 2 replicas down)")
    assert diagnose_fleet([]).fleet.message == "no replicas"


def _scrape(running: float, waiting: float, preempt: float, gen: float, tpot_le: dict[str, int]) -> str:
    lines = [f"vllm:num_requests_running {running}", f"vllm:num_requests_waiting {waiting}",
             "vllm:kv_cache_usage_perc 0.5", f"vllm:num_preemptions_total {preempt}",
             f"vllm:generation_tokens_total {gen}"]
    lines += [f'vllm:time_per_output_token_seconds_bucket{{le="{le}"}} {n}' for le, n in tpot_le.items()]
    return "\n".join(lines)


def test_window_from_scrapes_averages_gauges_and_rates_counters() -> None:
    first = parse_exposition(_scrape(2, 0, 10, 1000, {"0.01": 0, "0.1": 10, "+Inf": 10}))
    mid = parse_exposition(_scrape(4, 2, 12, 1500, {"0.01": 0, "0.1": 20, "+Inf": 20}))
    last = parse_exposition(_scrape(6, 4, 14, 2000, {"0.01": 10, "0.1": 30, "+Inf": 30}))
    win = window_from_scrapes("r0", [(0.0, first), (5.0, mid), (10.0, last)], max_num_seqs=8)
    assert (win.running, win.waiting, win.kv_cache_usage) == (4.0, 2.0, 0.5)
    assert win.preemptions_per_s == 0.4 and win.generation_tokens_per_s == 100.0
    assert win.tpot_p50_s is not None and 0.01 <= win.tpot_p50_s <= 0.1  # 10 fast + 10 slower tokens
    assert win.max_num_seqs == 8
    one = window_from_scrapes("r0", [(0.0, first)])
    assert one.running == 2.0 and one.tpot_p50_s is None and one.preemptions_per_s == 0.0
    assert window_from_scrapes("r0", [], healthy=False).healthy is False


def test_window_reads_the_published_max_num_seqs() -> None:
    text = _scrape(4, 3, 0, 0, {"+Inf": 0}) + '\ndpserve:max_num_seqs{model_name="m"} 4'
    scrapes = [(0.0, parse_exposition(text)), (1.0, parse_exposition(text))]
    assert window_from_scrapes("r0", scrapes).max_num_seqs == 4
    assert window_from_scrapes("r0", scrapes, max_num_seqs=9).max_num_seqs == 9  # the caller's wins
    finding = diagnose_replica(window_from_scrapes("r0", scrapes))
    assert finding.state is State.REPLICA_BOUND and "at max-num-seqs (4)" in finding.message


# A replica's /metrics is another process's word: numbers that cannot be its state are not read
# (review_plan finding 10).

def _window(*texts: str, seconds: float = 1.0) -> ReplicaWindow:
    return window_from_scrapes("r0", [(i * seconds, parse_exposition(t)) for i, t in enumerate(texts)])


def test_non_finite_and_out_of_range_values_are_unknown() -> None:
    for bad in ("NaN", "+Inf", "-Inf", "1e308", "-7", "0", "2.5e7"):
        text = f"vllm:num_requests_running 2\ndpserve:max_num_seqs {bad}"
        assert _window(text, text).max_num_seqs is None, bad
    nan = "\n".join(f"{name} NaN" for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                                                "vllm:kv_cache_usage_perc", "vllm:generation_tokens_total"))
    win = _window(nan, nan)
    assert (win.running, win.waiting, win.kv_cache_usage, win.generation_tokens_per_s) == (0.0, 0.0, 0.0, 0.0)
    huge = "vllm:num_requests_running 1e308\nvllm:num_requests_waiting 1e308\nvllm:kv_cache_usage_perc 5"
    assert _window(huge, huge, huge).running == 0.0 and _window(huge).kv_cache_usage == 0.0
    # a mean of large finite values does not overflow to inf
    big = "vllm:num_requests_running 9e8"
    assert _window(big, big, seconds=0.1).running == 9e8


def test_negative_gauges_read_as_zero() -> None:
    neg = "vllm:num_requests_running -5\nvllm:num_requests_waiting -3\nvllm:kv_cache_usage_perc -1"
    win = _window(neg, neg)
    assert (win.running, win.waiting, win.kv_cache_usage) == (0.0, 0.0, 0.0)


def test_a_falling_or_negative_counter_is_no_rate() -> None:
    def gen(n: float) -> str:
        return f"vllm:generation_tokens_total {n}\nvllm:num_preemptions_total {n / 100}"

    assert _window(gen(5000), gen(100)).generation_tokens_per_s == 0.0  # restarted: no data
    assert _window(gen(-1000), gen(-2000)).preemptions_per_s == 0.0
    assert _window(gen(-1000), gen(500)).generation_tokens_per_s == 0.0
    assert _window(gen(0), gen(1e308), seconds=0.01).generation_tokens_per_s == 0.0  # overflows: no data
    assert _window(gen(100), gen(300), seconds=2.0).generation_tokens_per_s == 100.0
    assert _window("", gen(300), seconds=2.0).generation_tokens_per_s == 150.0  # appeared: counts from 0


def test_histograms_drop_nan_and_negative_buckets() -> None:
    def hist(n: int) -> str:
        return (f'vllm:time_per_output_token_seconds_bucket{{le="NaN"}} {n}\n'
                'vllm:time_per_output_token_seconds_bucket{le="0.01"} NaN\n'
                f'vllm:time_per_output_token_seconds_bucket{{le="+Inf"}} {n * 10}\n'
                f'vllm:time_to_first_token_seconds_bucket{{le="-1"}} {n * 5}\n'
                f'vllm:time_to_first_token_seconds_bucket{{le="+Inf"}} {n}\n')

    win = _window(hist(1), hist(2))
    assert win.tpot_p50_s is None and win.ttft_p99_s is None  # no finite bound left: unknown, not 0 or -1 s
    ok = ('vllm:time_to_first_token_seconds_bucket{le="-1"} 99\n'
          'vllm:time_to_first_token_seconds_bucket{le="0.1"} {n}\n'
          'vllm:time_to_first_token_seconds_bucket{le="+Inf"} {n}\n')
    ttft = _window(ok.replace("{n}", "0"), ok.replace("{n}", "10")).ttft_p99_s
    assert ttft is not None and 0.0 < ttft <= 0.1


def test_middle_scrape_keeps_what_the_window_reads_of_it() -> None:
    full = [parse_exposition(_scrape(r, r, 10 * r, 1000 * r, {"0.1": r, "+Inf": r})) for r in (2, 4, 6)]
    timed = list(enumerate(full))
    slim = [timed[0], (1, middle_scrape(full[1])), timed[2]]
    assert window_from_scrapes("r0", [(float(t), e) for t, e in slim]) == \
        window_from_scrapes("r0", [(float(t), e) for t, e in timed])
    assert middle_scrape(full[1]).buckets == {}


def test_a_healthy_replica_without_metrics_is_no_metrics_not_down() -> None:
    blind = w("r1", metrics_error="timed out after 5 s")
    f = diagnose_replica(blind)
    assert f.state is State.NO_METRICS and "timed out after 5 s" in f.message and "down" not in f.message
    d = diagnose_fleet([w("r0", running=3, generation_tokens_per_s=9), blind])
    assert d.fleet.state is State.OK and d.fleet.message.endswith("(1 of 2 replicas without metrics)")
    d = diagnose_fleet([w("r0", healthy=False), blind])
    assert d.fleet.state is State.NO_METRICS and d.bottleneck is None
    assert d.fleet.message == ("no healthy replica's /metrics could be read (1 of 2 replicas down; "
                               "1 without metrics)")


def test_repeated_replica_ids_do_not_mix_windows() -> None:
    """The fleet verdict speaks of the bound replica's own window, found by position."""
    d = diagnose_fleet([w("x", running=16, waiting=14, kv_cache_usage=0.4, max_num_seqs=16),
                        w("x", healthy=False)])
    assert d.fleet.state is State.REPLICA_BOUND
    assert d.fleet.message.startswith("x is at max-num-seqs (16) with 14 waiting")
