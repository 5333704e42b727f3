"""A prediction is finite and positive, or an error (never NaN in the ranking or in --json)."""

from __future__ import annotations

import math

import pytest

from dpserve.planner.catalog import resolve_arch
from dpserve.planner.formulas import Assumptions
from dpserve.planner.hardware import get_gpu
from dpserve.planner.layouts import Layout
from dpserve.planner.predict import PredictionError, Setting, predict
from dpserve.planner.workload import Workload


def _setting(asm: Assumptions) -> Setting:
    return Setting(resolve_arch("llama-3.1-8b"), get_gpu("H100-80GB"), 8, "bf16", "bf16",
                   Workload(1024, 256, concurrency=64), assumptions=asm)


def test_a_sane_prediction_passes() -> None:
    p = predict(_setting(Assumptions()), Layout(1, 1, 1))
    assert p.fits and p.decode_step_s is not None and 0 < p.decode_step_s < 1


@pytest.mark.parametrize("asm", [Assumptions(hbm_efficiency=math.nan), Assumptions(host_step_s=-1.0),
                                 Assumptions(host_seq_s=math.inf)])
def test_a_non_finite_or_negative_prediction_is_an_error(asm: Assumptions) -> None:
    with pytest.raises(PredictionError, match=r"DP1×TP1×PP1: the predicted .* is"):
        predict(_setting(asm), Layout(1, 1, 1))
