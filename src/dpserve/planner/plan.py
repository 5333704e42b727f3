"""A whole plan: resolve the inputs, predict every layout, rank them, recommend one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpserve.planner.catalog import resolve_arch
from dpserve.planner.config import PlanConfig
from dpserve.planner.formulas import Assumptions
from dpserve.planner.hardware import GpuSpec, get_gpu, load_gpu_spec
from dpserve.planner.layouts import enumerate_layouts
from dpserve.planner.predict import Prediction, Setting, predict
from dpserve.planner.recommend import Recommendation, rank, recommend
from dpserve.planner.report import plan_json, plan_text
from dpserve.planner.workload import resolve_workload


@dataclass(frozen=True)
class Plan:
    setting: Setting
    num_gpus: int
    predictions: tuple[Prediction, ...]  # every layout, in enumeration order
    ranked: tuple[Prediction, ...]  # the fitting ones, best first
    recommendation: Recommendation

    def to_json(self) -> dict[str, Any]:
        return plan_json(self.setting, self.predictions, self.recommendation, self.num_gpus)

    def to_text(self) -> str:
        return plan_text(self.setting, self.predictions, self.ranked, self.recommendation, self.num_gpus)


def setting_from_config(config: PlanConfig) -> Setting:
    gpu: GpuSpec = load_gpu_spec(config.gpu_spec) if config.gpu_spec else get_gpu(config.gpu)
    workload = resolve_workload(config.prompt_len, config.output_len, config.concurrency,
                                config.request_rate, config.workload_file)
    asm = Assumptions(max_num_seqs=config.max_num_seqs, max_num_batched_tokens=config.max_num_batched_tokens)
    return Setting(resolve_arch(config.model), gpu, config.gpus_per_node, config.dtype, config.kv_dtype,
                   workload, _s(config.ttft_slo_ms), _s(config.tpot_slo_ms), asm)


def make_plan(config: PlanConfig) -> Plan:
    return plan_for(setting_from_config(config), config.num_gpus)


def plan_for(s: Setting, num_gpus: int) -> Plan:
    preds = tuple(predict(s, lay) for lay in enumerate_layouts(num_gpus, s.gpus_per_node, s.arch))
    rec = recommend(s, preds)
    return Plan(s, num_gpus, preds, tuple(rank(preds)), rec)


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1e3
