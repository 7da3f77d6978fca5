"""The comparison baseline: the avatar's inputs through a plain U-Net (ANR / HF-Avatar style).

Same neural texture, face map and hand map as ``RamAvatar``, fed to an ordinary convolutional
U-Net (no dual attention, no style modulation, no wavelet output). Training both on the same
data isolates what the attention and the StyleUNet bring.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ram_avatar.body.layout import SmplxPose
from ram_avatar.body.template import BodyTemplate
from ram_avatar.models.avatar import check_maps, colour_base, encode_parts, to_rgba
from ram_avatar.models.face_map import FaceMap
from ram_avatar.models.hand_map import HandMap
from ram_avatar.models.hub import HubModel
from ram_avatar.models.inputs import prepare_inputs
from ram_avatar.models.layers import ConvAct, upsample_to
from ram_avatar.models.neural_texture import NeuralTexture
from ram_avatar.render import Camera


class PlainUNet(nn.Module):
    """(B, in, H, W) -> (B, out, H, W): strided-conv encoder, conv decoder with skips, any H, W."""

    def __init__(self, in_channels: int, out_channels: int, widths: list[int] | tuple[int, ...]):
        super().__init__()
        widths = list(widths)
        self.stem = ConvAct(in_channels, widths[0], stride=2)
        self.down = nn.ModuleList(
            nn.Sequential(ConvAct(widths[k - 1], widths[k], stride=2), ConvAct(widths[k], widths[k]))
            for k in range(1, len(widths))
        )
        self.up = nn.ModuleList(ConvAct(widths[k + 1] + widths[k], widths[k]) for k in range(len(widths) - 1))
        self.out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        out = skips[-1]
        for k in reversed(range(len(self.up))):
            out = self.up[k](torch.cat([upsample_to(out, skips[k].shape[-2:]), skips[k]], 1))
        return self.out(upsample_to(out, (H, W)))


class BaselineUNet(
    nn.Module,
    HubModel,
    library_name="ram-avatar",
    tags=["ram-avatar", "avatar", "neural-rendering", "baseline"],
):
    """Neural texture + face / hand maps -> plain U-Net -> RGBA; same ``maps`` and outputs as RamAvatar."""

    def __init__(
        self,
        texture_size: int = 256,
        texture_channels: int = 48,
        texture_levels: int = 2,
        face_code_channels: int = 8,
        map_hidden: int = 8,
        map_channels: int = 16,
        hand_line_sigma: float = 0.004,
        widths: list[int] | tuple[int, ...] = (16, 24, 32, 48),
        face_map: bool = True,
        hand_map: bool = True,
        colour_skip: bool = False,
        edge_spread: int = 0,
    ):
        super().__init__()
        # as RamAvatar's: the textured body, carried edge_spread pixels past its outline, is the starting image
        self.colour_skip, self.edge_spread = colour_skip, edge_spread
        self.texture = NeuralTexture(texture_channels, texture_size, texture_levels)
        self.face = FaceMap(face_code_channels, map_hidden, map_channels) if face_map else None
        self.hand = HandMap(map_hidden, map_channels, hand_line_sigma) if hand_map else None
        in_channels = texture_channels + map_channels * (int(face_map) + int(hand_map))
        self.unet = PlainUNet(in_channels, 4, widths)
        if colour_skip:  # start from the textured body exactly, as RamAvatar's zero-initialised output
            nn.init.zeros_(self.unet.out.weight)
            nn.init.zeros_(self.unet.out.bias)

    def prepare_inputs(
        self, template: BodyTemplate, pose: SmplxPose, camera: Camera, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """``ram_avatar.models.inputs.prepare_inputs`` without the attention's maps."""
        return prepare_inputs(template, pose, camera, expanded=False, **kwargs)

    def forward(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """maps as for ``RamAvatar.forward`` -> ``rgb`` (B, 3, H, W), ``alpha`` (B, 1, H, W), in [0, 1]."""
        check_maps(maps, "uv", "mask")
        current = self.texture(maps["uv"], maps["mask"])
        raw = self.unet(torch.cat([current, *encode_parts(maps, self.face, self.hand)], 1))
        if self.colour_skip:
            raw = raw + colour_base(current[:, :3], maps["mask"], self.edge_spread)
        return to_rgba(raw)
