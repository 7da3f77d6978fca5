"""RamAvatar: the renderer of one person (paper sections 3.1, 3.2, 3.4), a Hugging Face Hub class.

    F_cur  = texture(uv)                          body features of the posed template
    F_body = F_cur + DualAttention(F_cur, F_exp, F_prev)   (at the attention size, upsampled)
    F_face = FaceMap(face landmarks),  F_hand = HandMap(hand keypoints)
    RGBA   = StyleUNet([F_body, F_face, F_hand])
           (+ [F_cur[:3], mask] with ``colour_skip``: the textured body is the starting image)

Build the ``maps`` with ``prepare_inputs`` (documented in ``ram_avatar.models.inputs``).
The temporal discriminator (training only) is the separate ``TemporalDiscriminator`` class.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ram_avatar.body.layout import SmplxPose
from ram_avatar.body.template import BodyTemplate
from ram_avatar.models.configs import get_config
from ram_avatar.models.dual_attention import DualAttention, attention_size
from ram_avatar.models.face_map import FACE_LANDMARKS, FaceMap
from ram_avatar.models.hand_map import HAND_KEYPOINTS, HandMap
from ram_avatar.models.hub import HubModel
from ram_avatar.models.inputs import prepare_inputs
from ram_avatar.models.neural_texture import NeuralTexture
from ram_avatar.models.style_unet import StyleUNet
from ram_avatar.render import Camera


def check_maps(maps: dict[str, torch.Tensor], *names: str) -> None:
    """Raise a ValueError naming the first of ``names`` that ``maps`` lacks."""
    for name in names:
        if name not in maps:
            raise ValueError(f"maps has no {name!r}: build the maps with the model's prepare_inputs(...)")


def encode_parts(maps: dict[str, torch.Tensor], face: FaceMap | None, hand: HandMap | None) -> list[torch.Tensor]:
    """The face / hand feature maps (B, C, H, W) of the models that have them (absent input: none drawn)."""
    uv = maps["uv"]
    B, H, W = uv.shape[:3]
    parts = []
    if face is not None:
        parts.append(face(maps.get("face_points", uv.new_zeros(B, FACE_LANDMARKS, 3)), (H, W)))
    if hand is not None:
        parts.append(hand(maps.get("hand_keypoints", uv.new_zeros(B, 2, HAND_KEYPOINTS, 3)), (H, W)))
    return parts


class _ClampBack(torch.autograd.Function):
    """``x.clamp(0, 1)`` whose gradient keeps only what moves an out-of-range value back in."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(x)
        return x.clamp(0, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        (x,) = ctx.saved_tensors
        # A descent step moves x by -grad: below 0 keep grad < 0 (upwards), above 1 grad > 0.
        return torch.where(x < 0, grad.clamp(max=0), torch.where(x > 1, grad.clamp(min=0), grad))


def to_rgba(raw: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 4, H, W) network output -> rgb (B, 3, H, W) and alpha (B, 1, H, W), both in [0, 1].

    ``0.5 + raw`` clamped to [0, 1], with a gradient that can bring an out-of-range value back:
    a sigmoid here saturates early in training (most pixels are background, so alpha is first
    pushed to 0 everywhere) and its vanishing gradient then stalls alpha for good. The gradient
    only ever points back into the range: a plain straight-through clamp also passes the pushes
    that drive a value further out, at no cost in the loss, and on a 600-step CPU run of the
    example dancer the raw outputs drifted to -5e6, the gradients to 1e7, and the avatar went black.
    """
    rgba = _ClampBack.apply(raw + 0.5)
    return {"rgb": rgba[:, :3], "alpha": rgba[:, 3:]}


def spread_edge(colour: torch.Tensor, mask: torch.Tensor, spread: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The textured body carried ``spread`` pixels past the template's outline: (colour (B, 3,
    H, W), alpha (B, 1, H, W)) from the body's colours (zero off the body) and ``mask`` (B, H, W).

    A pixel off the body within that reach takes the mean colour of the body pixels in the
    (2 spread + 1)^2 box around it, and as alpha the fraction of the box they fill (beside a
    straight outline, ``(spread + 1 - d) / (2 spread + 1)`` at d pixels out); body pixels keep
    their colour and alpha 1. Why: the
    person's outline is never exactly the template's (fit error, hair, clothes, a soft matte),
    and a renderer that starts from a hard template edge never learns to move it (a 4-minute
    pose2sim run: alpha 0.000 on the person pixels just outside the template; 0.32 with a
    2-pixel spread, and person-only PSNR +1.7 dB)."""
    m = mask[:, None].to(colour.dtype)  # (B, 1, H, W)
    box = lambda x: F.avg_pool2d(x, 2 * spread + 1, stride=1, padding=spread)  # noqa: E731  (zero padded)
    weight = box(m)
    colour = torch.where(m > 0, colour, box(colour * m) / weight.clamp_min(1e-6))
    return colour, torch.maximum(m, weight)


def colour_base(colour: torch.Tensor, mask: torch.Tensor, spread: int = 0) -> torch.Tensor:
    """(B, 4, H, W) what ``colour_skip`` adds to the renderer's raw output: the sampled colour
    channels (B, 3, H, W) (RGB - 0.5, zero off the body) and ``mask`` (B, H, W) as alpha, both
    carried ``spread`` pixels past the outline (``spread_edge``), so that a zero network output
    renders the textured body (``to_rgba`` adds 0.5 and clamps)."""
    alpha = mask[:, None].to(colour.dtype)
    if spread > 0:
        colour, alpha = spread_edge(colour, mask, spread)
    return torch.cat([colour, alpha - 0.5], 1)


def texture_map_names(maps: dict[str, torch.Tensor], expanded: bool, previous: bool) -> list[str]:
    """The UV maps in ``maps`` the texture is sampled through: ``uv``, then ``uv_expanded`` (dual
    attention) and ``uv_previous`` (temporal attention, unless ``previous_features`` stand in)."""
    check_maps(maps, "uv", "mask")
    names = ["uv"]
    if expanded:
        check_maps(maps, "uv_expanded", "mask_expanded")
        names.append("uv_expanded")
    if previous and "previous_features" not in maps and "uv_previous" in maps:
        check_maps(maps, "mask_previous")
        names.append("uv_previous")
    return names


def previous_features(maps: dict[str, torch.Tensor], pooled: torch.Tensor) -> torch.Tensor | None:
    """The temporal attention's previous-frame features (B, C, h, w) from ``maps``, or None.

    ``previous_features`` is either one map per frame (B, C, h, w), or, for a batch of B
    consecutive frames of one stream, (1, C, h, w): the features of the frame before the first,
    each later frame taking its predecessor's ``pooled`` (B, C, h, w) ones (the features depend
    on the frame's own texture only, so a streamed chunk can render as one batch)."""
    previous = maps.get("previous_features")
    if previous is not None and previous.shape[0] == 1 and pooled.shape[0] > 1:
        previous = torch.cat([previous, pooled[:-1]])
    return previous


class RamAvatar(
    nn.Module,
    HubModel,
    library_name="ram-avatar",
    tags=["ram-avatar", "avatar", "neural-rendering", "full-body"],
):
    """A person's avatar: neural texture, dual attention, face / hand encoders and StyleUNet.

    Every ``__init__`` argument is part of the Hub config (``config.json``). Named sizes:
    ``RamAvatar.from_config_name("rt-256")`` (see ``ram_avatar.models.configs``).

    Args:
        texture_size / texture_channels / texture_levels: the neural texture (paper 1024, 48, 1).
        attention_hidden / attention_downsample / attention_recurrence / distance_power: the dual
            attention's width, frame-to-attention-map size ratio, passes, and d(i, u) exponent.
        expand_distance: metres the expanded body is pushed out along its normals.
        face_code_channels / map_hidden / map_channels / hand_line_sigma: face and hand encoders
            (paper: 16 output channels each).
        widths / style_dim / n_mlp / decoder_convs: the StyleUNet.
        spatial_attention / temporal_attention / face_map / hand_map: ablation switches; a part
            switched off is not built (no parameters, no input channels).
        colour_skip: the texture's first three channels are colour (RGB - 0.5) and the body
            mask is an alpha: both are added to the StyleUNet's output, so the renderer learns
            only what the textured template cannot show (hair, loose clothes, shading, edges).
            Initialised from the subject's own frames (``ram_avatar.training.unproject``), the
            avatar shows the person's colours at step 0. Off in avatars saved before it existed.
        edge_spread: with ``colour_skip``, pixels the textured body's colour and a fading alpha
            reach past the template's outline (``spread_edge``): the renderer can then move the
            outline to the person's. 0 (the hard template edge) in avatars saved before it existed.
    """

    def __init__(
        self,
        texture_size: int = 1024,
        texture_channels: int = 48,
        texture_levels: int = 1,
        attention_hidden: int = 96,
        attention_downsample: int = 4,
        attention_recurrence: int = 2,
        distance_power: float = 0.8,
        expand_distance: float = 0.03,
        face_code_channels: int = 8,
        map_hidden: int = 16,
        map_channels: int = 16,
        hand_line_sigma: float = 0.004,
        widths: list[int] | tuple[int, ...] = (64, 128, 256, 512, 512, 512, 512),
        style_dim: int = 512,
        n_mlp: int = 2,
        decoder_convs: int = 2,
        spatial_attention: bool = True,
        temporal_attention: bool = True,
        face_map: bool = True,
        hand_map: bool = True,
        colour_skip: bool = False,
        edge_spread: int = 0,
    ):
        super().__init__()
        self.attention_downsample = attention_downsample
        self.colour_skip, self.edge_spread = colour_skip, edge_spread
        self.expand_distance = expand_distance
        self.texture = NeuralTexture(texture_channels, texture_size, texture_levels)
        self.attention = (
            DualAttention(
                texture_channels,
                attention_hidden,
                recurrence=attention_recurrence,
                distance_power=distance_power,
                spatial=spatial_attention,
                temporal=temporal_attention,
            )
            if spatial_attention or temporal_attention
            else None
        )
        self.face = FaceMap(face_code_channels, map_hidden, map_channels) if face_map else None
        self.hand = HandMap(map_hidden, map_channels, hand_line_sigma) if hand_map else None
        in_channels = texture_channels + map_channels * (int(face_map) + int(hand_map))
        self.renderer = StyleUNet(in_channels, 4, widths, style_dim, n_mlp, decoder_convs)

    @classmethod
    def from_config_name(cls, name: str, **overrides: Any) -> RamAvatar:
        """A fresh (untrained) avatar of a named size, e.g. ``"rt-256"``, with ``overrides`` applied."""
        return cls(**{**get_config(name), **overrides})

    @property
    def uses_expanded(self) -> bool:
        return self.attention is not None and self.attention.spatial is not None

    @property
    def uses_previous(self) -> bool:
        return self.attention is not None and self.attention.temporal is not None

    def prepare_inputs(
        self, template: BodyTemplate, pose: SmplxPose, camera: Camera, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """``ram_avatar.models.inputs.prepare_inputs`` with this avatar's expansion and attention size."""
        return prepare_inputs(
            template,
            pose,
            camera,
            expand_distance=self.expand_distance,
            attention_downsample=self.attention_downsample,
            expanded=self.uses_expanded,
            **kwargs,
        )

    def features(self, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """Only the ``features`` ``forward`` returns (B, C, h, w): the frames' body features at the
        attention size (needs ``uv`` and ``mask`` alone), e.g. for the frame before a batch."""
        check_maps(maps, "uv", "mask")
        current = self.texture(maps["uv"], maps["mask"])
        return F.adaptive_avg_pool2d(current, attention_size(*current.shape[-2:], self.attention_downsample))

    def forward(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Render a batch.

        Args:
            maps: from ``prepare_inputs``; for temporal attention either ``uv_previous`` /
                ``mask_previous``, or ``previous_features`` from the previous output
                (streaming: (B, C, h, w), or (1, C, h, w) for a batch of consecutive frames, see
                ``previous_features``). With neither, the frame is its own predecessor (a first frame).
        Returns:
            ``rgb`` (B, 3, H, W) in [0, 1]: the person's colour (meaningful where alpha > 0;
            composite with ``rgb * alpha + background * (1 - alpha)``); ``alpha`` (B, 1, H, W)
            in [0, 1]; ``features`` (B, C, h, w): this frame's body features at the attention
            size, to pass as the next frame's ``previous_features``.
        """
        names = texture_map_names(maps, self.uses_expanded, self.uses_previous)
        sampled = dict(zip(names, self.texture.sample([(maps[n], maps[n.replace("uv", "mask")]) for n in names])))
        current = sampled["uv"]
        H, W = current.shape[-2:]
        small = attention_size(H, W, self.attention_downsample)
        pooled = F.adaptive_avg_pool2d(current, small)
        body = current
        if self.attention is not None:
            expanded = F.adaptive_avg_pool2d(sampled["uv_expanded"], small) if self.uses_expanded else None
            previous = None
            if self.uses_previous:
                previous = previous_features(maps, pooled)
                if previous is None:
                    previous = (
                        F.adaptive_avg_pool2d(sampled["uv_previous"], small) if "uv_previous" in sampled else pooled
                    )
            body = current + self.attention(pooled, expanded, previous, (H, W))
        parts = encode_parts(maps, self.face, self.hand)
        raw = self.renderer(torch.cat([body, *parts], 1))
        if self.colour_skip:
            raw = raw + colour_base(current[:, :3], maps["mask"], self.edge_spread)
        return {**to_rgba(raw), "features": pooled}
