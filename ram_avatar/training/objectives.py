"""The training objectives of paper section 3.4: compositing, hand crops, the GAN terms.

The generator predicts the person's colour and alpha; both the prediction and the ground truth
are composited onto the same background (a random colour per item in training, a fixed one for
metrics), so the losses and the metrics never depend on the video's real background (which the
avatar cannot know when driven elsewhere).

GAN: the non-saturating logistic loss (StyleGAN2 / StyleAvatar), with per-item weights so that
triplets whose neighbours are missing or held out contribute nothing:

    D: softplus(-D(real)) + softplus(D(fake))        G: softplus(-D(fake))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def composite(rgb: torch.Tensor, alpha: torch.Tensor, background: float | torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) colour over ``background`` (a constant, or colours (B, 3, 1, 1)) through
    (B, 1, H, W) alpha in [0, 1]."""
    return rgb * alpha + background * (1 - alpha)


def weighted_mean(per_item: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of (B, ...) values over the items with weight > 0 (0 when none: no gradient signal)."""
    per_item = per_item.flatten(1).mean(1)
    return (per_item * weight).sum() / weight.sum().clamp_min(1)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Non-saturating D loss: real triplets pushed to positive logits, fake ones to negative."""
    return weighted_mean(F.softplus(-real_logits) + F.softplus(fake_logits), weight)


def generator_gan_loss(fake_logits: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: the generator wants its triplets scored as real."""
    return weighted_mean(F.softplus(-fake_logits), weight)


def hand_boxes(
    keypoints: torch.Tensor,
    size: tuple[int, int],
    min_confidence: float = 0.3,
    margin: float = 0.3,
    min_side: float = 0.08,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square crop boxes around each hand's confident keypoints.

    Args:
        keypoints: (B, 2, 21, 3) hands as (u, v, confidence) in pixels.
        size: (H, W) of the frame.
        margin: added on each side, as a fraction of the keypoints' larger extent.
        min_side: the smallest box side as a fraction of the frame height (a closed fist's
            keypoints span only a few pixels, the hand around them does not).
    Returns:
        boxes (B, 2, 4) as (x0, y0, x1, y1) pixels, and valid (B, 2) bool: the hand has at least
        two confident keypoints.
    """
    H, _ = size
    seen = keypoints[..., 2] >= min_confidence  # (B, 2, 21)
    xy = keypoints[..., :2]
    low = torch.where(seen[..., None], xy, torch.inf).amin(2)
    high = torch.where(seen[..., None], xy, -torch.inf).amax(2)
    valid = seen.sum(-1) >= 2
    centre = torch.where(valid[..., None], (low + high) / 2, 0)
    side = torch.where(valid, (high - low).amax(-1), 0) * (1 + 2 * margin)
    half = side.clamp_min(min_side * H)[..., None] / 2
    return torch.cat([centre - half, centre + half], -1), valid


def crop(images: torch.Tensor, boxes: torch.Tensor, out_size: int) -> torch.Tensor:
    """Differentiable crops: images (B, C, H, W), boxes (B, K, 4) pixels -> (B * K, C, out, out).

    Bilinear resampling (``grid_sample``), zero outside the frame; box edges are pixel edges.
    """
    B, C, H, W = images.shape
    K = boxes.shape[1]
    steps = (torch.arange(out_size, device=images.device, dtype=images.dtype) + 0.5) / out_size  # (S,)
    x0, y0, x1, y1 = boxes.to(images.dtype).unbind(-1)  # (B, K)
    xs = (x0[..., None] + (x1 - x0)[..., None] * steps) / W * 2 - 1  # (B, K, S) in grid units
    ys = (y0[..., None] + (y1 - y0)[..., None] * steps) / H * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(xs[..., None, :], ys[..., :, None]), -1)  # (B, K, S, S, 2)
    repeated = images[:, None].expand(B, K, C, H, W).reshape(B * K, C, H, W)
    return F.grid_sample(repeated, grid.reshape(B * K, out_size, out_size, 2), align_corners=False)
