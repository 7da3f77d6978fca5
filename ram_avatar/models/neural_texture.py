"""The learnable neural texture: per-texel features sampled through the rasterized UV map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NeuralTexture(nn.Module):
    """A (channels, size, size) feature image on the template's UV atlas (paper: 48 x 1024^2).

    With ``levels > 1`` it is a Laplacian pyramid as in Deferred Neural Rendering: level k has
    size ``size / 2^k`` and the sampled feature is the sum over levels. A texel of a coarse level
    is shared by many pixels, so early in training the gradients fill the whole atlas instead of
    only the texels that happened to be seen; the finest level adds the detail.
    """

    def __init__(self, channels: int = 48, size: int = 1024, levels: int = 1, init_std: float = 0.1):
        super().__init__()
        if size < 2 ** (levels - 1):
            raise ValueError(f"texture size {size} is too small for {levels} pyramid levels")
        # Stored texel-major, (1, size, size, channels): seen through ``permute`` as a
        # channels-last (1, C, size, size) image, which CPU grid_sample reads ~4x faster (one
        # contiguous C-vector per texel tap) than the default layout.
        self.levels = nn.ParameterList(
            nn.Parameter(torch.randn(1, size >> k, size >> k, channels) * init_std) for k in range(levels)
        )

    @property
    def channels(self) -> int:
        return self.levels[0].shape[-1]

    def images(self) -> list[torch.Tensor]:
        """The pyramid levels as (1, C, size / 2^k, size / 2^k) images (views, channels-last)."""
        return [level.permute(0, 3, 1, 2) for level in self.levels]

    def forward(self, uv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sample the texture.

        Args:
            uv: (B, H, W, 2) texture coordinates in [0, 1], v up (``render_maps(...)['uv']``).
            mask: (B, H, W) bool, True where the body covers the pixel.
        Returns:
            (B, channels, H, W) features (channels-last memory), exactly zero on background.
        """
        return self.sample([(uv, mask)])[0]

    def sample(self, maps: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """``forward`` for several (uv, mask) pairs of any sizes, in one ``grid_sample`` per level.

        One call means one texture-sized gradient in the backward pass instead of one per map
        (the avatar samples the posed, the expanded and the previous body each step).
        """
        pixels, grids = [], []
        for uv, mask in maps:
            if uv.dim() != 4 or uv.shape[-1] != 2 or mask.shape != uv.shape[:3]:
                raise ValueError(
                    f"uv must be (B, H, W, 2) and mask (B, H, W); got {tuple(uv.shape)}, {tuple(mask.shape)}"
                )
            # Only covered pixels are sampled (a body covers a fifth to a third of a frame), all
            # batch items together since they share the texture; the rest stays exactly zero.
            covered = mask.reshape(-1).nonzero().squeeze(1)  # (P,)
            uv = uv.reshape(-1, 2).index_select(0, covered).to(self.levels[0].dtype)
            # The atlas's first row is v = 1 (image convention); grid_sample's y = -1 is that row.
            grids.append(torch.stack([2 * uv[:, 0] - 1, 1 - 2 * uv[:, 1]], dim=-1))
            pixels.append(covered)
        grid = torch.cat(grids).view(1, 1, -1, 2)
        sampled = sum(
            F.grid_sample(image, grid, padding_mode="border", align_corners=False)[0, :, 0].t()
            for image in self.images()
        )  # (sum of P, C)
        features = []
        for (uv, _), covered, values in zip(maps, pixels, sampled.split([len(p) for p in pixels])):
            B, H, W = uv.shape[:3]
            flat = values.new_zeros(B * H * W, self.channels).index_copy(0, covered, values)
            # (B, H, W, C) seen as (B, C, H, W): channels-last, the layout the convs prefer.
            features.append(flat.view(B, H, W, -1).permute(0, 3, 1, 2))
        return features
