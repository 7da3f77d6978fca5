"""The subject's colours on the template's UV atlas: the starting point of a ``colour_skip`` avatar.

Each training frame's person pixels are carried to the texel the posed template shows there
(the rasterizer's z-buffer keeps only the visible surface) and averaged with the weight

    w = cos(angle between the surface normal and the view ray)^2 * [GT mask > 0.9] * [inside the body]

so that surfaces seen head-on count most and grazing ones, where a pixel smears over many texels
and the fit's silhouette errors sit, count little. Texels no frame saw (the back of a subject
filmed from the front, inside the armpits) are filled from coarser averages (push-pull), so the
atlas has no holes for bilinear sampling to bleed into.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ram_avatar.body.layout import SmplxPose
from ram_avatar.body.template import BodyTemplate
from ram_avatar.render import Camera, interpolate, rasterize

ERODE = 2  # pixels along the body's silhouette left out (see _splat_frames)


def splat(uv: torch.Tensor, colour: torch.Tensor, weight: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted colour sums on a (size, size) atlas.

    Args:
        uv: (P, 2) texture coordinates in [0, 1], v up (row 0 of the atlas is v = 1).
        colour: (P, 3); weight: (P,) non-negative.
    Returns:
        sums (3, size, size) of weight * colour and (size, size) sums of weight.
    """
    col = (uv[:, 0] * size).long().clamp(0, size - 1)
    row = ((1 - uv[:, 1]) * size).long().clamp(0, size - 1)
    index = row * size + col
    sums = colour.new_zeros(size * size, 3).index_add_(0, index, colour * weight[:, None])
    weights = weight.new_zeros(size * size).index_add_(0, index, weight)
    return sums.t().reshape(3, size, size), weights.view(size, size)


def push_pull(sums: torch.Tensor, weights: torch.Tensor, min_weight: float = 1e-3) -> torch.Tensor:
    """(3, S, S) colour = sums / weights where seen, else the average of the next coarser level
    (recursively), blended by how much was seen: a hole-free atlas.

    Args:
        sums: (3, S, S) weighted colour sums; weights: (S, S).
    """
    seen = (weights / min_weight).clamp(max=1)  # 1 where enough was seen, fading to 0
    mean = sums / weights.clamp_min(1e-12)
    if sums.shape[-1] <= 1:
        return mean
    coarse = push_pull(F.avg_pool2d(sums[None], 2)[0] * 4, F.avg_pool2d(weights[None, None], 2)[0, 0] * 4, min_weight)
    coarse = F.interpolate(coarse[None], size=sums.shape[-2:], mode="bilinear", align_corners=False)[0]
    return seen * mean + (1 - seen) * coarse


@torch.no_grad()
def unproject_colours(
    template: BodyTemplate,
    pose: SmplxPose,
    camera: Camera,
    images: Sequence,
    masks: Sequence,
    size: int,
    *,
    shape: torch.Tensor | None = None,
    expression: torch.Tensor | None = None,
    offsets: torch.Tensor | None = None,
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames' colours unprojected onto the template's atlas.

    Args:
        template / pose / camera / shape / expression / offsets: the posed body of N frames and
            their N (or 1) cameras (``camera.image_size`` = the frames' (H, W)); shape (1, S),
            expression (N or 1, E), offsets (V,) or None.
        images: N frames (H, W, 3), uint8 or float in [0, 1]; masks: N person masks (H, W), same
            scale. Any sequence indexed by frame (an array, or lazily decoded files): only
            ``batch_size`` frames are in memory at once.
        size: the atlas side in texels.
        batch_size: frames decoded and rasterized at once (bounds the memory).
    Returns:
        colour (3, size, size) in [0, 1] (hole-free, see :func:`push_pull`) and coverage
        (size, size): the summed weights (0 where no frame saw the texel).
    """
    N = len(images)
    sums, weights = torch.zeros(3, size, size), torch.zeros(size, size)
    for start in range(0, N, batch_size):
        frames = slice(start, min(start + batch_size, N))
        image, mask = (torch.as_tensor(np.stack([np.asarray(a[i]) for i in range(N)[frames]])) for a in (images, masks))
        scale = 255.0 if image.dtype == torch.uint8 else 1.0
        cams = (
            camera
            if camera.batch_size == 1
            else Camera(camera.K[frames], camera.R[frames], camera.t[frames], camera.image_size)
        )
        expr = expression if expression is None or expression.shape[0] == 1 else expression[frames]
        body = template(pose[frames], shape, expr, offsets)
        s, w = _splat_frames(template, body, cams, image, mask / scale, size, scale)
        sums, weights = sums + s.cpu(), weights + w.cpu()
    return push_pull(sums, weights).clamp(0, 1), weights


def _splat_frames(template, body, camera, images, person, size, scale):  # noqa: ANN001, ANN202
    """:func:`splat` of a batch of frames, their posed ``body`` (see :func:`unproject_colours`)."""
    fragments = rasterize(body.vertices, template.faces, camera, camera.image_size)
    uv = interpolate(fragments, template.uv_faces, template.uvs)  # (B, H, W, 2)
    normals = F.normalize(interpolate(fragments, template.faces, body.normals), dim=-1)  # (B, H, W, 3) world
    B, H, W = fragments.mask.shape
    # View rays through the pixel centres in the camera frame, turned into the world frame (R^T).
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], -1).to(uv)  # (H, W, 3)
    K, R = camera.K.to(uv).expand(B, 3, 3), camera.R.to(uv).expand(B, 3, 3)
    rays = torch.einsum("nij,hwj->nhwi", torch.linalg.inv(K), pixels)
    rays = F.normalize(torch.einsum("nji,nhwj->nhwi", R, rays), dim=-1)
    cosine = (-(normals * rays).sum(-1)).clamp(min=0)
    # Only pixels well inside both the person and the body: a soft mask edge mixes in the
    # background's colour, and near the body's silhouette a fitting error puts the wrong texel.
    inside = -F.max_pool2d(-fragments.mask[:, None].to(uv), 2 * ERODE + 1, 1, ERODE)[:, 0]
    weight = cosine.square() * (person.to(uv) > 0.9) * inside
    keep = weight.reshape(-1) > 0
    colour = (images.to(uv) / scale).reshape(-1, 3)[keep]
    return splat(uv.reshape(-1, 2)[keep], colour, weight.reshape(-1)[keep], size)


def subject_colours(subject, template: BodyTemplate, frames: list[int], size: int) -> torch.Tensor:  # noqa: ANN001
    """(3, size, size) colours in [0, 1] of a subject dataset's ``frames`` (e.g. the training
    split only: held-out frames must not leak into the avatar) on ``template``'s atlas."""
    from torch.utils.data import Subset

    from ram_avatar.training.data import frame_params, subject_offsets, subject_shape

    device = template.faces.device
    pose, camera, expression = frame_params(subject, frames, device)
    shape = subject_shape(subject, device)
    images, masks = Subset(subject.frames, frames), Subset(subject.masks, frames)  # decoded batch by batch
    offsets = subject_offsets(subject, device)
    return unproject_colours(
        template, pose, camera, images, masks, size, shape=shape, expression=expression, offsets=offsets
    )[0]
