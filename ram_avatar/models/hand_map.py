"""The hand feature map: a skeleton drawn from the 21 keypoints of each hand, then a shallow U-Net.

Keypoints follow MediaPipe Hand (0 wrist; 1-4 thumb, 5-8 index, 9-12 middle, 13-16 ring,
17-20 pinky, base to tip). Each hand gets six channels: one per finger (its four bones from the
wrist to the tip) and one for the palm (the knuckle line 5-9-13-17), so the network sees which
finger is where even when fingers cross. Lines are drawn as Gaussian profiles around each bone,
scaled by the confidence of its weaker end, and a channel keeps the strongest line at a pixel.
"""

from __future__ import annotations

import torch
from torch import nn

from ram_avatar.models.layers import ShallowUNet

HAND_KEYPOINTS = 21
_FINGERS = [[0, 1 + 4 * f, 2 + 4 * f, 3 + 4 * f, 4 + 4 * f] for f in range(5)]
# Four bones per channel so that the channels stack into one tensor; the palm has three knuckle
# segments, the last one repeated (a duplicate cannot change a maximum).
_BONES = [list(zip(chain[:-1], chain[1:])) for chain in _FINGERS] + [[(5, 9), (9, 13), (13, 17), (13, 17)]]
SEGMENTS = torch.tensor(_BONES)  # (6 channels, 4 bones, 2 ends)
CHANNELS_PER_HAND = SEGMENTS.shape[0]


@torch.no_grad()
def draw_hand_skeleton(
    keypoints: torch.Tensor,
    size: tuple[int, int],
    sigma: float,
    canvas: tuple[torch.Tensor, tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Draw both hands' skeletons (not differentiable: the keypoints are inputs).

    Args:
        keypoints: (B, 2, 21, 3) left and right hand keypoints as (u, v, confidence), pixels of
            the frame (pixel centres at j + 0.5, i + 0.5); confidence 0 = not detected.
        size: (H, W).
        sigma: line half-width, the Gaussian's standard deviation in pixels.
        canvas: (origins, (h, w)): return only a (h, w) crop of each item's frame, its top-left
            pixel at that item's row of ``origins`` (B, 2) long as (y0, x0) (the same values).
    Returns:
        (B, 12, H, W) in [0, 1] ((B, 12, h, w) with a canvas): left hand's 6 channels (thumb,
        index, middle, ring, pinky, palm), then the right hand's. Lines are cut off 4 sigma from
        their bone.
    """
    if keypoints.dim() != 4 or keypoints.shape[1:] != (2, HAND_KEYPOINTS, 3):
        raise ValueError(
            f"hand keypoints must be (B, 2, {HAND_KEYPOINTS}, 3) as (u, v, confidence); got {tuple(keypoints.shape)}"
        )
    B, (H, W) = keypoints.shape[0], size
    hands = keypoints.reshape(2 * B, HAND_KEYPOINTS, 3)
    # A hand covers a small part of the frame: evaluate the lines only in a window around it,
    # the same size for every hand of the batch (the largest hand box, 4 sigma margin added).
    seen = hands[..., 2] > 0
    xy = hands[..., :2]
    low = torch.where(seen[..., None], xy, torch.inf).amin(1) - 4 * sigma  # (2B, 2) as (u, v)
    high = torch.where(seen[..., None], xy, -torch.inf).amax(1) + 4 * sigma
    any_seen = seen.any(1, keepdim=True)
    low = torch.where(any_seen, low, 0).floor()
    extent = torch.where(any_seen, high - low, 1).ceil().amax(0)  # (2,) window width, height
    window_w, window_h = min(max(int(extent[0]), 1), W), min(max(int(extent[1]), 1), H)
    origin_u = low[:, 0].clamp(0, W - window_w).long()  # (2B,) top-left pixel of each window
    origin_v = low[:, 1].clamp(0, H - window_h).long()
    columns = origin_u[:, None] + torch.arange(window_w, device=hands.device)  # (2B, w)
    rows = origin_v[:, None] + torch.arange(window_h, device=hands.device)  # (2B, h)

    ends = hands[:, SEGMENTS.to(hands.device)]  # (2B, 6, 4, 2 ends, 3)
    a, b = ends[..., 0, :2], ends[..., 1, :2]  # (2B, 6, 4, 2)
    weight = torch.minimum(ends[..., 0, 2], ends[..., 1, 2]).clamp(0, 1)  # (2B, 6, 4)
    d = b - a
    length2 = (d * d).sum(-1).clamp_min(1e-12)
    # Offsets of the window's pixel centres from each bone's start, separable in u and v.
    du = (columns[:, None, None] + 0.5).to(hands.dtype) - a[..., 0, None]  # (2B, 6, 4, w)
    dv = (rows[:, None, None] + 0.5).to(hands.dtype) - a[..., 1, None]  # (2B, 6, 4, h)
    # Each pixel's closest point on the bone, as a fraction of the bone, clamped to the bone.
    t = ((dv * d[..., 1, None])[..., :, None] + (du * d[..., 0, None])[..., None, :]) / length2[..., None, None]
    t = t.clamp_(0, 1)
    ex = du[..., None, :] - t * d[..., 0, None, None]
    ey = dv[..., :, None] - t * d[..., 1, None, None]
    distance2 = ex.square_().add_(ey.square_())
    near = distance2 < (4 * sigma) ** 2
    # Clamped where cut off anyway: exp of a large negative number (a result that underflows)
    # runs ~10x slower on x86 CPUs than one in range, and most window pixels are far from a bone.
    lines = torch.exp(-distance2.clamp_max_((4 * sigma) ** 2) / (2 * sigma**2)) * near * weight[..., None, None]
    window = lines.amax(dim=2)  # (2B, 6, h, w)
    # Paste each window into its frame (the canvas; window pixels outside it go to a spare slot).
    if canvas is None:
        canvas = (torch.zeros(B, 2, dtype=torch.long, device=hands.device), (H, W))
    origins, (h, w) = canvas[0].to(hands.device).repeat_interleave(2, 0), canvas[1]  # (2B, 2): per hand
    rows, columns = rows - origins[:, :1], columns - origins[:, 1:]
    index = (rows[:, :, None] * w + columns[:, None, :]).flatten(1)  # (2B, window h * w)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((columns >= 0) & (columns < w))[:, None, :]
    index = torch.where(inside.flatten(1), index, h * w)
    frame = window.new_zeros(2 * B, CHANNELS_PER_HAND, h * w + 1)
    frame.scatter_(2, index[:, None].expand(-1, CHANNELS_PER_HAND, -1), window.flatten(2))
    return frame[..., :-1].reshape(B, 2 * CHANNELS_PER_HAND, h, w)


class HandMap(nn.Module):
    """Hand keypoints -> (B, out_channels, H, W) hand features (paper: 16 channels).

    ``line_sigma`` is the drawn line's half-width as a fraction of the frame height (so the
    drawing looks the same at every resolution).
    """

    def __init__(self, hidden: int = 16, out_channels: int = 16, line_sigma: float = 0.004):
        super().__init__()
        self.line_sigma = line_sigma
        self.unet = ShallowUNet(2 * CHANNELS_PER_HAND, hidden, out_channels)

    def sigma(self, size: tuple[int, int]) -> float:
        """The drawn lines' half-width in pixels for a (H, W) frame."""
        return max(self.line_sigma * size[0], 0.5)

    def draw(
        self, keypoints: torch.Tensor, size: tuple[int, int], canvas: tuple[torch.Tensor, tuple[int, int]] | None = None
    ) -> torch.Tensor:
        """The U-Net's input: (B, 12, H, W) (or the ``canvas`` crops), see ``draw_hand_skeleton``."""
        return draw_hand_skeleton(keypoints.to(self.unet.out.weight.dtype), size, self.sigma(size), canvas)

    def forward(self, keypoints: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """keypoints: (B, 2, 21, 3) as (u, v, confidence), see ``draw_hand_skeleton``; size: (H, W)."""
        return self.unet(self.draw(keypoints, size))
