"""CPU fast path: nn.Linear layers swapped for oneDNN-prepacked weights after loading.

Why: on CPU a decode step is a chain of skinny GEMMs bound by reading the weights. With the weight
reordered once into oneDNN's blocked layout, `mkldnn._linear_pointwise` streams it about twice as
fast as the default `F.linear` (MKL sgemm on the row-major weight) at every batch size we tried.
"""

from __future__ import annotations

import torch
from torch import nn

_PACKING_BATCH_HINT = 32  # see PackedLinear.__init__


def packed_linear_supported(device: torch.device, dtype: torch.dtype) -> bool:
    return (device.type == "cpu" and dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


class PackedLinear(nn.Module):
    """y = x W^T + b with W held in oneDNN's packed layout (not a Parameter: inference only)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.nbytes = weight.numel() * weight.element_size()
        # The batch-size hint picks oneDNN's blocked layout. A hint of 1 (the "decode" guess) gave the
        # slowest layout at every batch size measured on AVX-512: 20 ms vs 15 ms per 1-token step of
        # all linears on 1 thread, 17 vs 10 ms on 2; any hint >= 4 was about as good as any other.
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, _PACKING_BATCH_HINT)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")


def pack_linears(module: nn.Module) -> int:
    """Replace every nn.Linear under `module` in place; returns how many were packed."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, PackedLinear(child))
            count += 1
        else:
            count += pack_linears(child)
    return count
