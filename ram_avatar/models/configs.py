"""Named avatar sizes: ``get_config(name)`` -> the ``RamAvatar`` keyword arguments.

    rt-256      real time on a laptop CPU at 256^2 (target: attention + renderer >= 30 FPS on 2
                cores, see benchmarks/render_speed.py): 2-level 256^2 texture, 16-channel
                attention at 32^2 (1/8: the criss-cross cost grows with the cube of the map
                side), thin StyleUNet (two styled convs per level, as StyleAvatar: +0.2 dB
                held-out PSNR after 900 CPU steps for ~4% more renderer time)
    hq-512      512^2, a mid-size StyleUNet, for a GPU or an offline CPU render
    paper-1024  the paper's model: 1024^2 x 48 texture, StyleAvatar's 1024^2 StyleUNet widths,
                attention width 96 at 256^2 (the official code's TriPlane_Conv(48, 96, 48))

rt-256 and hq-512 set ``colour_skip``: the textured body, its colours unprojected from the
subject's frames, is the renderer's starting image (see ``RamAvatar``), carried 2 pixels past the
template's outline (``edge_spread``: on pose2sim, 4 CPU minutes, held-out person-only PSNR 19.1 ->
20.8 dB, whole-frame LPIPS-alex 0.120 -> 0.083; 4 pixels: 21.1 dB but LPIPS 0.102, a halo off the person);
paper-1024 keeps the paper's renderer (``--model colour_skip=true`` adds it).

``image_size`` is the frame size each was designed for (a RamAvatar renders any size); it is
not a RamAvatar argument, read it with ``config_image_size``.
"""

from __future__ import annotations

import copy
from typing import Any

CONFIGS: dict[str, dict[str, Any]] = {
    "rt-256": dict(
        image_size=256,
        texture_size=256,
        texture_channels=48,
        texture_levels=2,
        attention_hidden=16,
        attention_downsample=8,
        face_code_channels=8,
        map_hidden=8,
        map_channels=16,
        widths=[16, 24, 32, 48],
        style_dim=64,
        n_mlp=2,
        decoder_convs=2,
        colour_skip=True,
        edge_spread=2,
    ),
    "hq-512": dict(
        image_size=512,
        texture_size=512,
        texture_channels=48,
        texture_levels=2,
        attention_hidden=48,
        attention_downsample=4,
        face_code_channels=8,
        map_hidden=16,
        map_channels=16,
        widths=[32, 64, 128, 256, 256, 256],
        style_dim=256,
        n_mlp=2,
        decoder_convs=2,
        colour_skip=True,
        edge_spread=2,
    ),
    "paper-1024": dict(
        image_size=1024,
        texture_size=1024,
        texture_channels=48,
        texture_levels=1,
        attention_hidden=96,
        attention_downsample=4,
        face_code_channels=8,
        map_hidden=16,
        map_channels=16,
        widths=[64, 128, 256, 512, 512, 512, 512],
        style_dim=512,
        n_mlp=2,
        decoder_convs=2,
    ),
}


def config_names() -> list[str]:
    return list(CONFIGS)


def config_image_size(name: str) -> int:
    """The frame size (pixels, square) the named config is designed for."""
    return _lookup(name)["image_size"]


def get_config(name: str) -> dict[str, Any]:
    """A copy of the named config as ``RamAvatar`` keyword arguments (``image_size`` left out)."""
    config = copy.deepcopy(_lookup(name))
    config.pop("image_size")
    return config


def _lookup(name: str) -> dict[str, Any]:
    if name not in CONFIGS:
        raise ValueError(f"Unknown avatar config {name!r}; choose one of {', '.join(CONFIGS)}")
    return CONFIGS[name]
