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
])
def test_bad_input_exits_2_with_a_message(args: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model = [] if "--model" in args else ["--model", "llama-3.1-8b"]
    assert _exit_status(["plan", *model, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_malformed_config_in_a_subprocess_exits_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"hidden_size": 4096, "num_attention_heads": 32}')
    proc = subprocess.run([sys.executable, "-m", "dpserve", "plan", "--model", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "config.json has no 'intermediate_size'" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
