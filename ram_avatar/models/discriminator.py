"""The temporal discriminator: a PatchGAN on three consecutive frames (paper section 3.4).

It judges a frame in the context of its neighbours, so the generator is pushed towards frames
that move coherently, not only look right one by one. Labels (the released official code swaps
them; this is the paper's intent):

    real = (GT_{t-1}, GT_t,         GT_{t+1})   three ground-truth frames
    fake = (GT_{t-1}, prediction_t, GT_{t+1})   the prediction between its true neighbours

``triplet(previous, current, following)`` builds the (B, 9, H, W) input.
"""

from __future__ import annotations

import torch
from torch import nn

from ram_avatar.models.hub import HubModel
from ram_avatar.models.layers import NEGATIVE_SLOPE

FRAMES = 3
IMAGE_CHANNELS = 3


def triplet(previous: torch.Tensor, current: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
    """Three (B, 3, H, W) frames t-1, t, t+1 -> the discriminator's (B, 9, H, W) input."""
    return torch.cat([previous, current, following], dim=1)


class TemporalDiscriminator(
    nn.Module,
    HubModel,
    library_name="ram-avatar",
    tags=["ram-avatar", "avatar", "discriminator"],
):
    """PatchGAN (pix2pix): strided 4x4 convs, one real/fake logit per overlapping patch.

    Args:
        channels: width of the first layer, doubled at each stride-2 layer (capped at 8x).
        layers: number of stride-2 layers; the receptive field grows with it (3: 70x70 pixels).
    """

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        widths = [FRAMES * IMAGE_CHANNELS] + [channels * min(2**k, 8) for k in range(layers + 1)]
        blocks: list[nn.Module] = []
        for k in range(layers + 1):
            stride = 2 if k < layers else 1
            # No normalisation on the first layer (as pix2pix); GroupNorm, not BatchNorm, after:
            # batches of 1-2 triplets are the norm here.
            norm = nn.Identity() if k == 0 else nn.GroupNorm(max(1, min(32, widths[k + 1] // 4)), widths[k + 1])
            blocks += [nn.Conv2d(widths[k], widths[k + 1], 4, stride, padding=1), norm, nn.LeakyReLU(NEGATIVE_SLOPE)]
        blocks.append(nn.Conv2d(widths[-1], 1, 4, 1, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: (B, 9, H, W) from ``triplet`` (images in the generator's range) -> (B, 1, h, w) logits."""
        if frames.dim() != 4 or frames.shape[1] != FRAMES * IMAGE_CHANNELS:
            raise ValueError(
                f"the temporal discriminator takes 3 RGB frames stacked on channels, (B, 9, H, W); got "
                f"{tuple(frames.shape)}: build it with triplet(previous, current, following)"
            )
        return self.net(frames)
