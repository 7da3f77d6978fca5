"""The fast inference path: a trained ``RamAvatar`` rewritten for driving, same forward contract.

    fast = optimize_for_inference(avatar)       # once, after loading
    out = fast(maps)                            # rgb / alpha / features as RamAvatar.forward

What changes, and why (measured on 2 AMD EPYC cores, ``benchmarks/animate.py``):

- The StyleUNet's style is a constant of the avatar (the learned latent through the mapping MLP;
  ``RamAvatar.forward`` never passes another), so every modulated / demodulated conv is folded
  into a plain conv with the style already in its weights: exact up to float rounding.
- The finest decoder level's ``ToImage`` (a 1x1 conv to 4 Haar sub-bands per channel) followed
  by the inverse Haar transform is one 1x1 conv (the transform folded into its weights) and a
  ``pixel_shuffle``: exact up to float rounding, and a dozen full-resolution elementwise ops fewer.
- The neural texture's Laplacian pyramid is summed into one texture at the finest size (one
  ``grid_sample`` instead of one per level). This one is *not* exact: a bilinear sample of the
  upsampled coarse level differs from the bilinear sample of the coarse level inside the fine
  texels that straddle a coarse texel centre line. The error is bounded by the coarse levels'
  curvature (zero for a texture that is linear across texels) and is what the stated tolerance
  covers; ``collapse_texture=False`` keeps the pyramid (then the whole path is exact).
- The face and hand U-Nets run only around the drawn face / each hand (``WindowedShallowUNet``):
  everywhere else their output is that of an empty drawing, computed once. Exact.
- The full-resolution body / face / hand features are assembled pixel-major (one contiguous
  (B, H, W, C) buffer, seen by the renderer as a channels-last image), so the concatenation and
  the attention residual run on contiguous memory instead of mixing layouts.
- Everything runs under ``torch.inference_mode``.

Kept out after measuring on that CPU (AVX2, no bf16 units): bf16 (the folded rt-256 renderer took
6x longer) and ``torch.compile`` (5 minutes to compile the renderer on a busy machine, then no
faster; and the covered-pixel count changes every frame, so the texture stage would recompile).
The dual attention is the eager module.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ram_avatar.models.avatar import RamAvatar, encode_parts, texture_map_names, to_rgba
from ram_avatar.models.dual_attention import attention_size
from ram_avatar.models.inputs import prepare_inputs
from ram_avatar.models.layers import NEGATIVE_SLOPE, ShallowUNet, upsample_to
from ram_avatar.models.style_unet import ModulatedConv2d, StyleUNet, encode_pyramid

# Inverse Haar transform as a table: output pixel (dy, dx) of a 2x2 block = sum over the
# sub-bands [LL, LH, HL, HH] of sign / 2 times the coefficient (see layers.haar_idwt).
_HAAR_SIGNS = torch.tensor(
    [[1, 1, 1, 1], [1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]], dtype=torch.float64
)  # (dy * 2 + dx, band)


@torch.no_grad()
def fold_modulated(conv: ModulatedConv2d, style: torch.Tensor) -> torch.Tensor:
    """The plain conv weight (O, I, k, k) equal to ``conv`` under the fixed ``style`` (1, style_dim)."""
    s = conv.modulation(style)[0].double()  # (I,)
    weight = conv.weight.double() * s[None, :, None, None]
    if conv.demodulate:
        weight = weight * torch.rsqrt(weight.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
    return weight


@torch.no_grad()
def fold_wavelet(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1x1 conv to Haar sub-bands + ``haar_idwt`` -> a 1x1 conv whose output ``pixel_shuffle(2)``s
    to the same image.

    Args:
        weight: (4 * O, I) float64, sub-band blocks [LL, LH, HL, HH] of O channels each.
        bias: (4 * O,).
    Returns:
        weight (4 * O, I) and bias (4 * O,) in pixel_shuffle order: channel o * 4 + dy * 2 + dx.
    """
    bands = weight.shape[0] // 4
    w = weight.view(4, bands, -1)  # (band, O, I)
    b = bias.view(4, bands).double()
    signs = _HAAR_SIGNS.to(weight.device) / 2  # (position, band)
    folded_w = torch.einsum("pb,boi->opi", signs, w.double()).reshape(4 * bands, -1)
    folded_b = torch.einsum("pb,bo->op", signs, b).reshape(4 * bands)
    return folded_w, folded_b


class FoldedStyleUNet(nn.Module):
    """A ``StyleUNet`` with its constant style folded in: (B, in, H, W) -> (B, out, H, W), as
    ``StyleUNet.forward(x)`` with the default latent. The encoder modules are shared with ``unet``."""

    def __init__(self, unet: StyleUNet):
        super().__init__()
        self.stem, self.down = unet.stem, unet.down
        with torch.no_grad():
            style = unet.style()
            dtype = unet.latent.dtype
            self.up = nn.ModuleList()
            for level in unet.up:
                convs = nn.ModuleList()
                for styled in level:
                    weight = fold_modulated(styled.conv, style)
                    conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[-1], padding=weight.shape[-1] // 2)
                    conv.weight.copy_(weight.to(dtype))
                    conv.bias.copy_(styled.bias.view(-1))
                    convs.append(conv)
                self.up.append(convs)
            self.to_image = nn.ModuleList()
            self.shuffle = [head.wavelet for head in unet.to_image]
            for head in unet.to_image:
                weight, bias = fold_modulated(head.conv, style)[..., 0, 0], head.bias.view(-1)
                if head.wavelet:
                    weight, bias = fold_wavelet(weight, bias)
                linear = nn.Linear(weight.shape[1], weight.shape[0])  # a 1x1 conv on pixel-major maps
                linear.weight.copy_(weight.to(dtype))
                linear.bias.copy_(bias.to(dtype))
                self.to_image.append(linear)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        skips = encode_pyramid(x, self.stem, self.down)
        out, image = None, None
        for k in reversed(range(len(skips))):
            out = skips[k] if out is None else torch.cat([upsample_to(out, skips[k].shape[-2:]), skips[k]], 1)
            for conv in self.up[k]:
                out = F.leaky_relu(conv(out), NEGATIVE_SLOPE)
            level = self.to_image[k](out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            if self.shuffle[k]:
                level = F.pixel_shuffle(level, 2)
            image = level if image is None else level + upsample_to(image, level.shape[-2:])
        return image[..., :H, :W]


class WindowedShallowUNet(nn.Module):
    """A ``ShallowUNet`` evaluated only around the non-zero parts of its input: exact, and much
    cheaper for the face and hand maps, whose drawn input is zero outside a face / two hands.

    Where the input is zero within the U-Net's receptive field (under 16 pixels: two stride-2
    3x3 convs, a 3x3 conv at half size, bilinear resizes), the output equals that of an all-zero
    input, computed once per frame size. Each region around drawn pixels (one per channel group,
    e.g. left / right hand) is grown by ``MARGIN``, recomputed on a crop grown by ``MARGIN`` more
    (so the crop's own borders cannot reach it), and pasted. Crops start and end on multiples of
    4 so the stride-2 grids and the 2x resizes line up with the full frame's; frames whose sides
    are not multiples of 4 (where the resizes are not exactly 2x) run the plain U-Net.
    """

    MARGIN = 16

    def __init__(self, unet: ShallowUNet, groups: int = 1):
        super().__init__()
        self.unet, self.groups = unet, groups
        self._background: dict[tuple, torch.Tensor] = {}

    def background(self, like: torch.Tensor) -> torch.Tensor:
        """(1, C, H, W): the U-Net's output for an all-zero input of ``like``'s size (cached)."""
        key = (tuple(like.shape[1:]), like.device, like.dtype)
        if key not in self._background:
            self._background[key] = self.unet(like.new_zeros(1, *like.shape[1:]))
        return self._background[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if H % 4 or W % 4:
            return self.unet(x)
        out = self.background(x).expand(x.shape[0], -1, -1, -1).contiguous(memory_format=torch.channels_last)
        for b in range(x.shape[0]):
            for group in x[b].chunk(self.groups):
                drawn = group.abs().amax(0) > 0  # (H, W)
                if not drawn.any():
                    continue
                rows, cols = drawn.any(1).nonzero()[:, 0], drawn.any(0).nonzero()[:, 0]
                region = self._grow(int(rows[0]), int(rows[-1]) + 1, H, self.MARGIN), self._grow(int(cols[0]), int(cols[-1]) + 1, W, self.MARGIN)
                crop = [self._grow(lo, hi, size, self.MARGIN) for (lo, hi), size in zip(region, (H, W))]
                (r0, r1), (c0, c1) = region
                (y0, y1), (x0, x1) = crop
                part = self.unet(x[b : b + 1, :, y0:y1, x0:x1])
                out[b : b + 1, :, r0:r1, c0:c1] = part[..., r0 - y0 : r1 - y0, c0 - x0 : c1 - x0]
        return out

    @property
    def out(self) -> nn.Conv2d:  # HandMap reads its dtype from ``unet.out``
        return self.unet.out

    @staticmethod
    def _grow(low: int, high: int, size: int, margin: int) -> tuple[int, int]:
        """[low, high) grown by ``margin``, out to multiples of 4, clipped to [0, size)."""
        return max(0, (low - margin) // 4 * 4), min(size, -(-(high + margin) // 4) * 4)


@torch.no_grad()
def collapse_pyramid(levels: list[torch.Tensor]) -> torch.Tensor:
    """Pyramid levels (1, C, S / 2^k, S / 2^k) -> one (1, S, S, C) texel-major texture: their sum,
    each coarse level bilinearly upsampled (approximate: see the module docstring)."""
    size = levels[0].shape[-2:]
    total = sum(upsample_to(level.double(), size) for level in levels)
    return total.to(levels[0].dtype).permute(0, 2, 3, 1).contiguous()


class FastRamAvatar(nn.Module):
    """``RamAvatar`` for inference: same ``forward(maps)`` contract (see ``RamAvatar.forward``).

    Build it with :func:`optimize_for_inference`. Not trainable (all parameters frozen) and not
    a Hub class: save and share the ``RamAvatar`` it was made from.
    """

    def __init__(self, avatar: RamAvatar, collapse_texture: bool = True):
        super().__init__()
        avatar = copy.deepcopy(avatar).eval()
        self.attention_downsample = avatar.attention_downsample
        self.expand_distance = avatar.expand_distance
        self.uses_expanded, self.uses_previous = avatar.uses_expanded, avatar.uses_previous
        images = avatar.texture.images()
        textures = [collapse_pyramid(images)] if collapse_texture else [i.permute(0, 2, 3, 1) for i in images]
        self.textures = nn.ParameterList(nn.Parameter(t, requires_grad=False) for t in textures)
        self.attention, self.face, self.hand = avatar.attention, avatar.face, avatar.hand
        if self.face is not None:
            self.face.unet = WindowedShallowUNet(self.face.unet)
        if self.hand is not None:
            self.hand.unet = WindowedShallowUNet(self.hand.unet, groups=2)  # left and right hand channels
        self.renderer = FoldedStyleUNet(avatar.renderer)
        self.requires_grad_(False)

    def prepare_inputs(self, template, pose, camera, **kwargs: Any) -> dict[str, torch.Tensor]:  # noqa: ANN001
        """The same maps as ``RamAvatar.prepare_inputs`` (this avatar's expansion and attention size)."""
        return prepare_inputs(
            template, pose, camera, expand_distance=self.expand_distance,
            attention_downsample=self.attention_downsample, expanded=self.uses_expanded, **kwargs,
        )  # fmt: skip

    def sample(self, maps: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """As ``NeuralTexture.sample`` but pixel-major: each (uv, mask) -> (B, H, W, C), zero off the body."""
        pixels, grids = [], []
        for uv, mask in maps:
            covered = mask.reshape(-1).nonzero().squeeze(1)
            uv = uv.reshape(-1, 2).index_select(0, covered).to(self.textures[0].dtype)
            grids.append(torch.stack([2 * uv[:, 0] - 1, 1 - 2 * uv[:, 1]], dim=-1))
            pixels.append(covered)
        grid = torch.cat(grids).view(1, 1, -1, 2)
        sampled = sum(
            F.grid_sample(t.permute(0, 3, 1, 2), grid, padding_mode="border", align_corners=False)[0, :, 0].t()
            for t in self.textures
        )
        features = []
        for (uv, _), covered, values in zip(maps, pixels, sampled.split([len(p) for p in pixels])):
            B, H, W = uv.shape[:3]
            flat = values.new_zeros(B * H * W, values.shape[1]).index_copy_(0, covered, values)
            features.append(flat.view(B, H, W, -1))
        return features

    @torch.inference_mode()
    def forward(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """As ``RamAvatar.forward``: rgb (B, 3, H, W), alpha (B, 1, H, W), features (B, C, h, w)."""
        names = texture_map_names(maps, self.uses_expanded, self.uses_previous)
        sampled = dict(zip(names, self.sample([(maps[n], maps[n.replace("uv", "mask")]) for n in names])))
        body = sampled["uv"]  # (B, H, W, C) pixel-major
        H, W = body.shape[1:3]
        small = attention_size(H, W, self.attention_downsample)
        pool = lambda x: F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), small)  # noqa: E731
        pooled = pool(body)
        if self.attention is not None:
            expanded = pool(sampled["uv_expanded"]) if self.uses_expanded else None
            previous = None
            if self.uses_previous:
                previous = maps.get("previous_features")
                if previous is None:
                    previous = pool(sampled["uv_previous"]) if "uv_previous" in sampled else pooled
            attended = self.attention(pooled, expanded, previous, (H, W))  # (B, C, H, W) channels-last
            body = body + attended.permute(0, 2, 3, 1)
        parts = [p.permute(0, 2, 3, 1) for p in encode_parts(maps, self.face, self.hand)]
        features = torch.cat([body, *parts], -1).permute(0, 3, 1, 2)  # channels-last (B, C', H, W)
        return {**to_rgba(self.renderer(features)), "features": pooled}


def optimize_for_inference(avatar: RamAvatar, collapse_texture: bool = True) -> FastRamAvatar:
    """A ``FastRamAvatar`` of ``avatar`` (a copy: the avatar itself is left as it is).

    Tolerance: with ``collapse_texture=False`` outputs match ``avatar(maps)`` to float rounding
    (tested at 1e-5); with the collapsed texture (default) rgb / alpha differ by the texture's
    approximation error: tested under 0.05, measured 0.009 max abs on an untrained rt-256 (random
    texels, the worst case for it), and 0 for a smooth coarse level. Move the avatar to its
    device first.
    """
    if not isinstance(avatar, RamAvatar):
        raise TypeError(f"optimize_for_inference takes a RamAvatar, got {type(avatar).__name__}")
    return FastRamAvatar(avatar, collapse_texture)
