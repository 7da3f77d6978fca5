"""Copying flax ``nn.Conv`` parameters into ``torch.nn.Conv2d`` modules."""

from __future__ import annotations

import torch
from torch import nn


def load_conv(conv: nn.Conv2d, params: dict[str, torch.Tensor], prefix: str) -> None:
    """Fill ``conv`` from ``params[prefix + "/kernel"]`` (flax HWIO) and ``prefix + "/bias"``.

    Both libraries compute cross-correlations, so the kernel is only transposed to torch's OIHW,
    never flipped.
    """
    kernel = params[f"{prefix}/kernel"].permute(3, 2, 0, 1)
    if kernel.shape != conv.weight.shape:
        raise ValueError(f"{prefix}: kernel {tuple(kernel.shape)} does not fit {tuple(conv.weight.shape)}")
    with torch.no_grad():
        conv.weight.copy_(kernel)
        if conv.bias is not None:
            conv.bias.copy_(params[f"{prefix}/bias"])
