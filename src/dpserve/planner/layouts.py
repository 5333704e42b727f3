"""Layouts: every DP × TP × PP (and DP-attention) split of N GPUs, and the structural rules they obey."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dpserve.planner.architecture import ModelArch


@dataclass(frozen=True)
class Layout:
    """DP replicas of TP × PP GPUs. DP-attention (MLA/MoE models): inside a replica, attention runs
    data-parallel over the TP GPUs (each GPU its own sequences and their KV), the experts/MLP
    sharded over them."""

    dp: int
    tp: int
    pp: int
    dp_attention: bool = False

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def num_gpus(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def label(self) -> str:
        return f"DP{self.dp}×TP{self.tp}×PP{self.pp}" + ("+DPA" if self.dp_attention else "")


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})


def fits_nodes(num_gpus: int, gpus_per_node: int, group: int) -> bool:
    """Whether groups of `group` consecutive GPUs stay inside nodes of `gpus_per_node` (the GPUs
    fill the nodes in order; the last node may be partial): yes when all the GPUs are one node or
    the group size divides the node's."""
    return num_gpus <= gpus_per_node or gpus_per_node % group == 0


def enumerate_layouts(num_gpus: int, gpus_per_node: int, arch: ModelArch) -> list[Layout]:
    """Every split that uses all `num_gpus`, DP-attention variants for MLA or MoE models. The rules:
    a TP group stays inside a node (its all-reduce needs NVLink-class links), so TP divides the GPUs
    per node (TP=3 on 4-GPU nodes would put GPUs 3-5 across two); a replica no larger than a node
    stays inside one too (formulas.layout_links costs its PP hand-offs at the node's link), so its
    size divides the node's; a larger replica spans whole TP groups of several nodes."""
    layouts = []
    for tp in _divisors(num_gpus):
        if not fits_nodes(num_gpus, gpus_per_node, tp):
            continue
        for pp in _divisors(num_gpus // tp):
            if tp * pp <= gpus_per_node and not fits_nodes(num_gpus, gpus_per_node, tp * pp):
                continue
            dp = num_gpus // (tp * pp)
            layouts.append(Layout(dp, tp, pp))
            if tp > 1 and (arch.is_mla or arch.is_moe):
                layouts.append(Layout(dp, tp, pp, dp_attention=True))
    return layouts


def layout_problem(arch: ModelArch, layout: Layout) -> str | None:
    """Why the engine cannot run this split at all (before memory), or None."""
    tp, kv = layout.tp, arch.num_kv_heads
    if not layout.dp_attention and arch.num_heads % tp:
        return f"TP={tp} does not divide the {arch.num_heads} attention heads"
    if not layout.dp_attention and not arch.is_mla and kv % tp and tp % kv:
        return f"TP={tp} and the {kv} KV heads do not divide one another"
    if layout.pp > arch.num_layers:
        return f"PP={layout.pp} exceeds the {arch.num_layers} layers"
    return None
