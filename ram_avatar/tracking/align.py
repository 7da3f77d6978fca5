"""Photometric alignment: the "align" stage of ``ram-avatar track``, per-frame pose corrections
that make the textured template line up with the frame's pixels.

The keypoint and silhouette fits leave each frame's body a few pixels off the person inside the
outline (a forearm, a shoulder, the torso's twist): keypoints are sparse and noisy, and a
silhouette says nothing about the inside. The avatar is built on those poses: its texture is
unprojected from the training frames (``ram_avatar.training.unproject``) and its renderer learns
from them, so a frame misregistered by 2 px blurs the texture, and the renderer, given the same
input for differently placed pixels, learns their average.

The fix is analysis by synthesis (as in Alldieck et al. 2018, Vid2Avatar and others that refine
the body during reconstruction). Repeat ``rounds`` times:

1. unproject every frame's colours onto the template's atlas with the current poses (the mean
   appearance, sharper each round as the frames agree more);
2. for ``iters`` Adam steps on ``batch`` frames at a time, render the template with that atlas
   and minimise the L1 difference to the frame over the pixels inside both the person mask and
   the body (differentiable through the rasterizer's barycentrics), plus the silhouette term of
   the fit's last stage, ``prior`` x the squared correction and ``smooth`` x its squared change
   from frame to frame.

Only ``global_orient``, ``body_pose`` and ``transl`` are corrected (fingers, jaw and eyes stay as
fitted: at a crop's resolution they cover too few pixels to be seen). Frames with no person get
only the prior and smoothness terms, so they follow their neighbours.

The atlas is built from every frame, held-out ones included, as the shape and surface offsets are
fitted to every frame's mask: tracking does not know the training split, and the avatar's own
texture is still unprojected from its training frames only.

Measured on pose2sim_single_cam01 (256^2 crops, #17), held-out frames rendered from the avatar's
starting image (the training frames' colours on the template, before any training), person
pixels only: PSNR 21.5 -> 22.4 dB and SSIM 0.746 -> 0.784 (23.7 -> 24.9 dB with the true
outline). ~3 minutes on 2 cores at 256^2, any clip length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ram_avatar.body.layout import SmplxPose
from ram_avatar.body.template import BodyTemplate
from ram_avatar.render import Camera, interpolate, rasterize, soft_silhouette

CORRECTED = ("global_orient", "body_pose", "transl")


@dataclass
class AlignConfig:
    """Rounds, steps and weights of :func:`align_poses` (tuned on pose2sim, #17: 2 rounds of 200
    steps gave 22.1 dB where 3 of 300 give 22.4; a silhouette weight of 1 let the outline slip)."""

    rounds: int = 3
    iters: int = 300  # Adam steps per round
    batch: int = 8  # frames rendered per step
    lr: float = 2e-3  # radians / metres per step
    silhouette: float = 2.0  # per mean |silhouette - mask| (the colour term is a mean L1 in [0, 1])
    prior: float = 1e-2  # per squared radian or metre of correction, summed over joints, per frame
    smooth: float = 1e-2  # per squared change of the correction from one frame to the next
    size: int = 256  # side of the frames compared (larger crops are averaged down to it)
    atlas: int = 256  # texels per side of the unprojected colours
    silhouette_size: int = 128


def _corrected(pose: SmplxPose, delta: dict[str, torch.Tensor], frames: torch.Tensor) -> SmplxPose:
    """``pose[frames]`` with the corrections added (axis-angle sums: the corrections are small)."""
    part = pose[frames]
    return SmplxPose(**{k: v + delta[k][frames] if k in delta else v for k, v in vars(part).items()})


def _losses(template, pose, shape, expression, offsets, camera, images, masks, small, atlas, frames, config):  # noqa: ANN001, ANN202, PLR0913
    """(colour L1, silhouette L1) of ``frames``: scalars, differentiable w.r.t. ``pose``."""
    expr = None if expression is None else expression[frames]
    body = template(pose, shape, expr, offsets)
    cams = camera[frames]
    fragments = rasterize(body.vertices, template.faces, cams)
    uv = interpolate(fragments, template.uv_faces, template.uvs)  # (B, S, S, 2), v up
    grid = torch.stack([2 * uv[..., 0] - 1, 1 - 2 * uv[..., 1]], dim=-1)
    colour = F.grid_sample(atlas.expand(len(frames), -1, -1, -1), grid, align_corners=False)  # (B, 3, S, S)
    image = images[frames].permute(0, 3, 1, 2).float() / 255  # (B, 3, S, S)
    # Inside both: a soft mask edge mixes in the background, and outside the body there is no colour.
    inside = (fragments.mask & (masks[frames] > 0.9)).float()[:, None]
    colour_l1 = ((colour - image).abs() * inside).sum() / (3 * inside.sum()).clamp(min=1)
    size = (config.silhouette_size,) * 2
    silhouette = soft_silhouette(body.vertices, template.faces, cams.resize(size), size)
    return colour_l1, (silhouette - small[frames]).abs().mean()


def align_poses(
    template: BodyTemplate,
    pose: SmplxPose,
    shape: torch.Tensor,
    camera: Camera,
    images: np.ndarray,
    masks: np.ndarray,
    expression: torch.Tensor | None = None,
    offsets: torch.Tensor | None = None,
    config: AlignConfig | None = None,
    max_iters: int | None = None,
    progress: bool = True,
) -> SmplxPose:
    """Correct each frame's pose so that the textured template matches the frame (module docstring).

    Args:
        template / pose (batch N) / shape (S,) / expression (N, E) / offsets (V,): the fitted body.
        camera: the N frames' cameras (``image_size`` = the frames' size).
        images: (N, H, W, 3) uint8 frames; masks: (N, H, W) uint8 person masks (0 .. 255).
        max_iters: caps the steps of each round (quick tests).
    Returns:
        The corrected poses (batch N; fingers, jaw and eyes unchanged).
    """
    from ram_avatar.training.unproject import unproject_colours

    config = config or AlignConfig()
    device = template.faces.device
    N, H, W = np.shape(masks)
    size = (min(H, config.size), min(W, config.size))
    frames_t = torch.as_tensor(np.asarray(images), device=device)
    masks_t = torch.as_tensor(np.asarray(masks), device=device).float() / 255
    if size != (H, W):  # compare at most config.size pixels a side: the cost is per pixel
        frames_t = F.interpolate(frames_t.permute(0, 3, 1, 2).float(), size=size, mode="area")
        frames_t = frames_t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        masks_t = F.interpolate(masks_t[:, None], size=size, mode="area")[:, 0]
    camera = camera.resize(size)
    small = F.interpolate(masks_t[:, None], size=(config.silhouette_size,) * 2, mode="area")[:, 0]
    seen = torch.nonzero(small.flatten(1).amax(1) > 0)[:, 0]  # frames showing a person
    shape = shape.reshape(1, -1)
    if len(seen) == 0:
        raise ValueError("no frame shows the person: nothing to align the body to")

    pose = pose.to(device)
    delta = {k: torch.zeros_like(getattr(pose, k), requires_grad=True) for k in CORRECTED}
    every = torch.arange(N, device=device)
    iters = config.iters if max_iters is None else min(config.iters, max_iters)
    generator = torch.Generator().manual_seed(0)
    # The frames and masks as unproject_colours reads them (masks on the frames' 0..255 scale).
    unproject_inputs = (frames_t.cpu().numpy(), (masks_t * 255).round().to(torch.uint8).cpu().numpy())
    bar = tqdm(total=config.rounds * iters, desc="fit: align", disable=not progress, leave=False)
    for _ in range(config.rounds):
        with torch.no_grad():
            atlas = unproject_colours(
                template,
                _corrected(pose, delta, every),
                camera,
                *unproject_inputs,
                config.atlas,
                shape=shape,
                expression=expression,
                offsets=offsets,
            )[0].to(device)[None]  # (1, 3, A, A)
        optimizer = torch.optim.Adam(list(delta.values()), lr=config.lr)
        for step in range(iters):
            for group in optimizer.param_groups:  # cosine from lr to lr / 10 within each round
                group["lr"] = config.lr * (0.55 + 0.45 * math.cos(math.pi * step / max(iters - 1, 1)))
            pick = torch.randperm(len(seen), generator=generator)[: config.batch].to(device)
            batch = seen[pick]
            colour, silhouette = _losses(
                template,
                _corrected(pose, delta, batch),
                shape,
                expression,
                offsets,
                camera,
                frames_t,
                masks_t,
                small,
                atlas,
                batch,
                config,
            )
            prior = sum(d.square().sum() for d in delta.values()) / N
            smooth = sum((d[1:] - d[:-1]).square().sum() for d in delta.values()) / N
            loss = colour + config.silhouette * silhouette + config.prior * prior + config.smooth * smooth
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update()
    bar.close()
    with torch.no_grad():
        return _corrected(pose, delta, every)
