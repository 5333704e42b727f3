"""`dpserve plan` on the command line: the --json contract and bad input → message + exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpserve.cli import main

LAYOUT_KEYS = {"dp", "tp", "pp", "dp_attention", "fits", "why_not", "weights_gb_per_gpu",
               "kv_tokens_per_replica", "max_concurrent_seqs", "decode_step_ms", "prefill_ms", "slo_met"}
PREDICTION_KEYS = {"output_tok_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "bound",
                   "capacity_tok_s"}


def test_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", "--model", "llama-3.1-70b", "--gpu", "H100-80GB", "--num-gpus", "8", "--dtype", "fp8",
               "--prompt-len", "512", "--output-len", "128", "--request-rate", "5", "--ttft-slo-ms", "500",
               "--tpot-slo-ms", "50", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    rec = out["recommended"]
    assert isinstance(rec["dp"], int) and isinstance(rec["tp"], int) and isinstance(rec["pp"], int)
    assert rec["dp"] * rec["tp"] * rec["pp"] == 8 and rec["reason"].startswith(rec["label"])
    assert len(out["layouts"]) == 10
    for lay in out["layouts"]:
        assert set(lay) >= LAYOUT_KEYS
        assert set(lay) >= PREDICTION_KEYS if lay["fits"] else lay["why_not"]
    assert out["slo"] == {"ttft_ms": 500.0, "tpot_ms": 50.0, "judged_at": "p99"}
    assert out["assumptions"]["hbm_efficiency"] == 0.9 and "Erlang C" in out["queueing_model"]


def test_table_marks_the_recommendation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "llama-3.1-8b", "--num-gpus", "2", "--concurrency", "8"]) == 0
    out = capsys.readouterr().out
    assert "\n* DP" in out and "recommended: DP" in out and "TTFT p50/p99 ms" in out


def _exit_status(argv: list[str]) -> int:
    """main()'s return value, or argparse's exit status (it exits 2 itself on a bad choice)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize(("args", "message"), [
    (["--gpu", "H300"], "unknown GPU 'H300'"),
    (["--model", "llama-3.1-405b", "--num-gpus", "1"], "no layout of llama-3.1-405b fits"),
    (["--num-gpus", "0"], "--num-gpus must be in 1..4096"),
    (["--concurrency", "4", "--request-rate", "1"], "not both"),
    (["--model", "no-such-model"], "unknown model"),
    (["--dtype", "fp4"], "invalid choice"),
    # finite and bounded: orjson's 64-bit integers, float overflow, inf read as "no SLO" or a hang
    (["--concurrency", str(10**30), "--json"], "--concurrency must be in 1..10000000, got 1000"),
    (["--concurrency", str(10**400)], "--concurrency must be in 1..10000000, got 1000"),
    (["--max-num-batched-tokens", str(10**400)], "--max-num-batched-tokens must be in 1..10000000"),
    (["--prompt-len", str(10**9)], "--prompt-len must be in 1..100000000, got 1000000000"),
    (["--output-len", str(10**9)], "--output-len must be in 1..100000000"),
    (["--request-rate", "inf", "--json"], "--request-rate must be a finite number in (0, 1e+07], got inf"),
    (["--ttft-slo-ms", "inf"], "--ttft-slo-ms must be a finite number in (0, 8.64e+07], got inf"),
    (["--tpot-slo-ms", "nan"], "--tpot-slo-ms must be a finite number"),
    (["--time-scale", "inf"], "--time-scale must be a finite number in [1, 10000], got inf"),
    (["--time-scale", "0.5"], "--time-scale must be a finite number in [1, 10000], got 0.5"),
    (["--window-s", "1e9"], "--window-s must be a finite number in (0, 3600], got 1000000000.0"),
    (["--window-s", "inf"], "--window-s must be a finite number in (0, 3600], got inf"),
    (["--simulate-requests", "1000000000"], "--simulate-requests must be in 1..100000"),
    (["--simulate-top", "1000000000"], "--simulate-top must be in 1..20"),
])
def test_bad_input_exits_2_with_a_message(args: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model = [] if "--model" in args else ["--model", "llama-3.1-8b"]
    assert _exit_status(["plan", *model, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1  # one line (argparse's too: no usage dump)


def test_simulate_refuses_a_fleet_too_large_before_starting_anything(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def no_fleet(*args: object) -> None:
        raise AssertionError("a sim fleet was started")

    monkeypatch.setattr("dpserve.planner.simulate.sim_fleet", no_fleet)
    # the default (tiny) model on 4096 GPUs: the best layouts are thousands of one-GPU replicas
    assert main(["plan", "--num-gpus", "4096", "--simulate", "--json"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("dpserve plan: error: --simulate runs at most 32 sim replicas per layout, "
                              "and DP4096×TP1×PP1 (among the top 3) has 4096")


def test_arithmetic_errors_are_a_one_line_error_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def overflow(config: object) -> None:
        raise OverflowError("integer division result too large for a float")

    monkeypatch.setattr("dpserve.planner.plan.make_plan", overflow)
    assert main(["plan", "--model", "llama-3.1-8b"]) == 2
    assert capsys.readouterr().err == (
        "dpserve plan: error: the model, GPU or workload figures are out of the planner's range "
        "(OverflowError: integer division result too large for a float)\n")


def test_json_has_only_finite_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "llama-3.1-8b", "--num-gpus", "2", "--request-rate", "1e7",
                 "--json"]) == 0

    def refuse(constant: str) -> None:
        raise AssertionError(f"--json holds {constant}")

    out = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert out["workload"]["request_rate"] == 1e7 and out["layouts"][0]["overloaded"]


def test_malformed_config_in_a_subprocess_exits_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"hidden_size": 4096, "num_attention_heads": 32}')
    proc = subprocess.run([sys.executable, "-m", "dpserve", "plan", "--model", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "config.json has no 'intermediate_size'" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
