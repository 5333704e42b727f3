"""GPU specifications: the built-in table of published figures and `--gpu-spec FILE.yaml` loading.

Every figure is the vendor's published one; FLOP/s are *dense* tensor-core rates (NVIDIA's
datasheets print "with sparsity" figures that are twice these). Links are per GPU and per
direction (datasheets print NVLink totals for both directions: 900 GB/s → 450 each way).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from dpserve.config import read_yaml

LinkKind = Literal["nvlink", "pcie"]


class HardwareError(ValueError):
    """An unknown GPU name or an invalid GPU spec file; the message says what is valid."""


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator as the planner sees it."""

    name: str
    memory_gb: float  # HBM/GDDR capacity, 10^9 bytes (what the datasheet prints)
    hbm_gb_s: float  # peak memory bandwidth, 10^9 bytes/s
    bf16_tflops: float  # dense BF16 tensor-core peak
    fp8_tflops: float | None  # dense FP8 peak; None = no FP8 tensor cores (FP8 weights run as BF16 math)
    link_gb_s: float  # GPU↔GPU inside a node, per direction
    link: LinkKind = "nvlink"
    # One step of a ring all-reduce, besides the all-reduce's launch (Assumptions.allreduce_launch_s,
    # 5 µs): NCCL's small-message all-reduce on two NVSwitch-connected H100s takes ~6 µs
    # (github.com/NVIDIA/nccl/issues/1259) = 5 + 2 steps × 0.5 µs; over PCIe ~3 µs a step.
    link_latency_us: float = 0.5
    # NVLink SHARP: the NVSwitch reduces in the network (HGX H100/H200/B200 boards; not the A100's
    # NVSwitch, not PCIe). Assumptions.nvls_efficiency says what it achieves.
    nvls: bool = False

    def __post_init__(self) -> None:
        for name in ("memory_gb", "hbm_gb_s", "bf16_tflops", "link_gb_s"):
            if not getattr(self, name) > 0:
                raise HardwareError(f"GPU {self.name!r}: {name} must be > 0, got {getattr(self, name)}")
        if self.fp8_tflops is not None and not self.fp8_tflops > 0:
            raise HardwareError(f"GPU {self.name!r}: fp8_tflops must be > 0 or absent")
        if self.link_latency_us < 0:
            raise HardwareError(f"GPU {self.name!r}: link_latency_us must be >= 0")
        if not isinstance(self.nvls, bool):
            raise HardwareError(f"GPU {self.name!r}: nvls must be true or false, got {self.nvls!r}")

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9


# Sources (dense = half the datasheets' "with sparsity" figures):
# - H100-80GB (SXM5): nvidia.com/en-us/data-center/h100 — 80 GB HBM3, 3.35 TB/s, BF16 1,979 TF
#   sparse, FP8 3,958 TF sparse, NVLink 900 GB/s.
# - H200 (SXM): nvidia.com/en-us/data-center/h200 — 141 GB HBM3e, 4.8 TB/s, same tensor cores as
#   H100 SXM, NVLink 900 GB/s.
# - A100-80GB (SXM4): nvidia.com/en-us/data-center/a100 — 80 GB HBM2e, 2,039 GB/s, BF16 312 TF
#   dense, no FP8, NVLink 600 GB/s.
# - L40S: nvidia.com/en-us/data-center/l40s — 48 GB GDDR6, 864 GB/s, BF16 362 TF dense (733 sparse),
#   FP8 733 TF dense (1,466 sparse), no NVLink: PCIe Gen4 x16, 64 GB/s both ways.
# - A10G (AWS g5): 24 GB GDDR6, 600 GB/s, ~70 TF BF16 tensor (the A10 prints 125; AWS's variant
#   trades tensor for CUDA-core throughput — baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference),
#   no FP8, PCIe Gen4 x16.
# - B200 (HGX, 1,000 W): DGX B200 datasheet 1,440 GB for 8 GPUs = 180 GB HBM3e, 8 TB/s; dense
#   BF16 2,250 TF and FP8 4,500 TF (glennklockwood.com/garden/processors/B200, from NVIDIA's
#   Blackwell datasheet); NVLink 5 1.8 TB/s.
BUILTIN_GPUS: dict[str, GpuSpec] = {g.name: g for g in (
    GpuSpec("H100-80GB", 80, 3350, 989, 1979, 450, nvls=True),
    GpuSpec("H200", 141, 4800, 989, 1979, 450, nvls=True),
    GpuSpec("A100-80GB", 80, 2039, 312, None, 300),
    GpuSpec("L40S", 48, 864, 362, 733, 32, link="pcie", link_latency_us=3.0),
    GpuSpec("A10G", 24, 600, 70, None, 32, link="pcie", link_latency_us=3.0),
    GpuSpec("B200", 180, 8000, 2250, 4500, 900, nvls=True),
)}


def get_gpu(name: str) -> GpuSpec:
    """A built-in GPU by name (case-insensitive); HardwareError lists the valid names."""
    by_lower = {k.lower(): v for k, v in BUILTIN_GPUS.items()}
    spec = by_lower.get(name.lower())
    if spec is None:
        close = [k for k in BUILTIN_GPUS if k.lower().startswith(name.lower())] or difflib.get_close_matches(
            name, list(BUILTIN_GPUS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise HardwareError(f"unknown GPU {name!r}{hint}; built in: {', '.join(BUILTIN_GPUS)}; "
                            "or describe yours with --gpu-spec FILE.yaml")
    return spec


def load_gpu_spec(path: Path) -> GpuSpec:
    """A GpuSpec from YAML whose keys are GpuSpec's fields (name, memory_gb, hbm_gb_s, bf16_tflops,
    link_gb_s required; fp8_tflops, link, link_latency_us, nvls optional). An unreadable file or invalid
    YAML raises ConfigError; bad content HardwareError."""
    raw = read_yaml(path, "--gpu-spec")
    if not isinstance(raw, dict):
        raise HardwareError(f"--gpu-spec {path} must be a mapping of GPU fields")
    return _spec_from_mapping(raw, str(path))


def _spec_from_mapping(raw: dict[str, Any], where: str) -> GpuSpec:
    valid = {f.name: f for f in fields(GpuSpec)}
    unknown = sorted(set(map(str, raw)) - set(valid))
    if unknown:
        raise HardwareError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    required = ("name", "memory_gb", "hbm_gb_s", "bf16_tflops", "link_gb_s")
    missing = [k for k in required if k not in raw]
    if missing:
        raise HardwareError(f"{where}: missing key(s) {', '.join(missing)}")
    values: dict[str, Any] = {"fp8_tflops": None, **raw}
    try:
        for key in ("memory_gb", "hbm_gb_s", "bf16_tflops", "link_gb_s", "link_latency_us"):
            if key in values:
                values[key] = _number(values[key], key)
        if values["fp8_tflops"] is not None:
            values["fp8_tflops"] = _number(values["fp8_tflops"], "fp8_tflops")
        if values.get("link", "nvlink") not in ("nvlink", "pcie"):
            raise HardwareError(f"link must be nvlink or pcie, got {values['link']!r}")
        values["name"] = str(values["name"])
        return GpuSpec(**values)
    except HardwareError as exc:
        raise HardwareError(f"{where}: {exc}") from exc


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HardwareError(f"{key} must be a number, got {value!r}")
    return float(value)
