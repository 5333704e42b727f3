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

from dpserve.config import in_range, range_message, read_yaml, short_repr

LinkKind = Literal["nvlink", "pcie"]


class HardwareError(ValueError):
    """An unknown GPU name or an invalid GPU spec file; the message says what is valid."""


# What a GpuSpec's figures may be: a figure outside is a typo or a unit slip (GB/s given in TB/s),
# and an extreme one breaks the arithmetic (1e-300 GB/s: 1e300 ms steps; 1e30 GB: KV token counts
# beyond --json's 64-bit integers; inf: NaN). Every built-in GPU sits well inside.
SPEC_RANGES: dict[str, tuple[float, float]] = {
    "memory_gb": (1, 10_000), "hbm_gb_s": (1, 1e6), "bf16_tflops": (0.1, 1e6), "fp8_tflops": (0.1, 1e6),
    "link_gb_s": (0.1, 1e5), "link_latency_us": (0, 1e4)}


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
        if not isinstance(self.name, str) or not self.name:
            raise HardwareError(f"a GPU's name must be a non-empty string, got {short_repr(self.name)}")
        for name in SPEC_RANGES:
            value = getattr(self, name)
            if not (value is None and name == "fp8_tflops") and not in_range(value, *SPEC_RANGES[name]):
                raise HardwareError(f"GPU {short_repr(self.name)}: {_out_of_range(name, value)}")
        if self.link not in ("nvlink", "pcie"):
            raise HardwareError(f"GPU {short_repr(self.name)}: link must be nvlink or pcie, "
                                f"got {short_repr(self.link)}")
        if not isinstance(self.nvls, bool):
            raise HardwareError(f"GPU {short_repr(self.name)}: nvls must be true or false, "
                                f"got {short_repr(self.nvls)}")

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
        raise HardwareError(f"unknown GPU {short_repr(name)}{hint}; built in: {', '.join(BUILTIN_GPUS)}; "
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
        for key in SPEC_RANGES:  # types first: a message formats the value (short_repr keeps it short)
            if values.get(key) is not None:
                values[key] = _number(values[key], key)
        return GpuSpec(**values)
    except HardwareError as exc:
        raise HardwareError(f"{where}: {exc}") from exc


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HardwareError(f"{key} must be a number, got {short_repr(value)}")
    if isinstance(value, int) and not in_range(value, *SPEC_RANGES[key]):
        raise HardwareError(_out_of_range(key, value))  # before float(), which a 400-digit int overflows
    return float(value)


def _out_of_range(key: str, value: Any) -> str:
    return range_message(key, value, *SPEC_RANGES[key], also=" or absent" if key == "fp8_tflops" else "")
