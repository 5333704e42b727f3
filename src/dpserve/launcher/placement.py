"""Placement: dp/tp/pp and the devices at hand → each replica's GPUs or CPU cores and thread count.

Pure arithmetic, no probing here: `detect_gpu_ids` / `available_cpu_cores` in this module only read
the environment once, at start-up, and the rest takes their answers as arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_NVIDIA_GPUS_DIR = Path("/proc/driver/nvidia/gpus")


class PlacementError(ValueError):
    """The replicas do not fit on the devices; the message states the arithmetic."""


@dataclass(frozen=True)
class Placement:
    """Where one replica runs: its GPUs (CUDA ids as the host numbers them) or its CPU cores."""

    index: int
    gpu_ids: tuple[str, ...] = ()
    cpu_cores: tuple[int, ...] = ()
    num_threads: int | None = None

    @property
    def on_gpu(self) -> bool:
        return bool(self.gpu_ids)

    def env(self) -> dict[str, str]:
        """Environment that confines the replica to its devices."""
        if self.on_gpu:
            return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpu_ids)}
        env = {"CUDA_VISIBLE_DEVICES": ""}
        if self.num_threads is not None:
            # torch's intra-op pool and the BLAS libraries each size themselves from these.
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                env[name] = str(self.num_threads)
        return env


def devices_needed(dp_size: int, tp_size: int, pp_size: int = 1) -> str:
    """The arithmetic as the banner, --help and errors state it: "4 replicas × TP 2 × PP 1 = 8"."""
    return f"{dp_size} replicas × TP {tp_size} × PP {pp_size} = {dp_size * tp_size * pp_size}"


def place_on_gpus(dp_size: int, tp_size: int, gpu_ids: Sequence[str], pp_size: int = 1) -> list[Placement]:
    """Replica i gets gpu_ids[i·D : (i+1)·D] with D = TP × PP; too few GPUs is an error with the
    arithmetic."""
    per_replica = tp_size * pp_size
    if dp_size * per_replica > len(gpu_ids):
        shown = ",".join(gpu_ids) if gpu_ids else "none"
        raise PlacementError(
            f"{devices_needed(dp_size, tp_size, pp_size)} GPUs needed, but {len(gpu_ids)} "
            f"available (--gpu-ids {shown}); lower --dp-size, --tp-size or --pp-size, or give more --gpu-ids")
    return [Placement(i, gpu_ids=tuple(gpu_ids[i * per_replica:(i + 1) * per_replica]))
            for i in range(dp_size)]


def place_on_cpus(dp_size: int, cores: Sequence[int]) -> list[Placement]:
    """Split the cores into dp_size disjoint contiguous sets, sizes differing by at most one.

    With fewer cores than replicas, replica i shares core i mod #cores (one thread each): they
    will contend, but the service still runs, which beats refusing to start.
    """
    if not cores:
        raise PlacementError("no CPU cores available to place replicas on")
    ordered = sorted(cores)
    if dp_size > len(ordered):
        return [Placement(i, cpu_cores=(ordered[i % len(ordered)],), num_threads=1) for i in range(dp_size)]
    base, extra = divmod(len(ordered), dp_size)
    placements, start = [], 0
    for i in range(dp_size):
        size = base + (1 if i < extra else 0)
        placements.append(Placement(i, cpu_cores=tuple(ordered[start:start + size]), num_threads=size))
        start += size
    return placements


def parse_visible_devices(value: str) -> tuple[str, ...]:
    """CUDA_VISIBLE_DEVICES → its ids, in order ("" → none)."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def detect_gpu_ids(environ: Mapping[str, str] | None = None,
                   gpus_dir: Path = _NVIDIA_GPUS_DIR) -> tuple[str, ...]:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else the NVIDIA driver's count.

    Reads the driver's /proc entries rather than initialising CUDA, so the parent stays light and
    never holds a CUDA context its children would have to share.
    """
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        return parse_visible_devices(env["CUDA_VISIBLE_DEVICES"])
    try:
        count = sum(1 for _ in gpus_dir.iterdir())
    except OSError:
        return ()
    return tuple(str(i) for i in range(count))


def available_cpu_cores() -> tuple[int, ...]:
    """Cores this process may run on (its affinity mask, which respects cgroups/taskset)."""
    return tuple(sorted(os.sched_getaffinity(0)))
