"""Surface offsets: the person's clothes, hair and build beyond the template's shape space.

After the body fit the posed template still misses the person's outline where its shape space
cannot follow: loose clothes, long hair, a build outside the phenotype range (on the pose2sim
clip the fit drives Anny's weight and proportions to 0.93 and 0.98 of their range, and the body
still sits inside the person). As in SMPL+D (Alldieck et al., "Video Based Reconstruction of 3D
People Models", CVPR 2018), one displacement per vertex, shared by every frame, is fitted to the
person masks with the poses held fixed; here a scalar along the posed normal
(``BodyTemplate.forward``'s ``offsets``), so it follows the body into any pose.

Loss: mean |soft silhouette - mask| (as the fit's silhouette stage) + ``smooth`` x the mean
squared difference of the offsets at the two ends of each mesh edge (a surface, not noise) +
``magnitude`` x the mean squared offset. Offsets are clamped to [``low``, ``high``] metres. The
hands keep zero offsets: the masks' hands are convex hulls grown around the keypoints
(``refine_mask``), and fingers would swell into them.

Measured at 256^2, median template-vs-mask IoU over every 10th frame: pose2sim_single_cam01
0.891 -> 0.914, the synthetic dancer (long hair) 0.868 -> 0.915; ~20 s on 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ram_avatar.body.layout import JOINT_NAMES, SmplxPose
from ram_avatar.body.template import BodyTemplate
from ram_avatar.render import Camera, soft_silhouette


@dataclass
class SurfaceConfig:
    """Steps, learning rate and weights of :func:`fit_surface_offsets` (tuned on pose2sim, #17:
    800 steps at 4e-3 swelled the body, IoU 0.911 instead of 0.919)."""

    iters: int = 300
    lr: float = 2e-3  # metres per step (Adam)
    batch: int = 8  # frames compared per step
    size: int = 128  # silhouette side in pixels
    smooth: float = 10.0  # per mean squared offset difference along the edges (m^2)
    magnitude: float = 1e-2  # per mean squared offset (m^2)
    low: float = -0.02  # metres: the body may shrink a little (a fit too wide) ...
    high: float = 0.15  # ... and grow more (skirts, long hair)


def hand_vertices(template: BodyTemplate, shape: torch.Tensor) -> torch.Tensor:
    """(V,) bool: the vertices past either wrist in the rest pose (a T-pose: arms along x)."""
    with torch.no_grad():
        rest = template(SmplxPose.zeros(1, device=shape.device), shape[None])
    x = rest.vertices[0, :, 0]
    left, right = (rest.joints[0, JOINT_NAMES.index(name), 0] for name in ("left_wrist", "right_wrist"))
    return (x > left) | (x < right) if left > right else (x < left) | (x > right)


def fit_surface_offsets(
    template: BodyTemplate,
    pose: SmplxPose,
    shape: torch.Tensor,
    camera: Camera,
    masks: np.ndarray,
    expression: torch.Tensor | None = None,
    config: SurfaceConfig | None = None,
    max_iters: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Fit the clip's surface offsets (module docstring).

    Args:
        template / pose (batch N) / shape (S,) / expression (N, E): the fitted body.
        camera: the N frames' cameras (``image_size`` = the masks' size).
        masks: (N, H, W) uint8 person masks (0 .. 255).
        max_iters: caps the steps (quick tests).
    Returns:
        (V,) float32 offsets in metres along the posed normals.
    """
    config = config or SurfaceConfig()
    device = template.faces.device
    size = (config.size, config.size)
    people = torch.as_tensor(np.asarray(masks), device=device).float() / 255
    small = torch.nn.functional.interpolate(people[:, None], size=size, mode="area")[:, 0]  # (N, s, s)
    frames = torch.nonzero(small.flatten(1).amax(1) > 0)[:, 0]  # frames showing a person
    if len(frames) == 0:
        raise ValueError("no frame shows the person: nothing to fit the surface to")
    with torch.no_grad():  # the poses are fixed: pose the mesh once
        body = template(pose, shape[None], expression)
    faces = template.faces
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(1).values.unique(dim=0)
    free = (~hand_vertices(template, shape)).float()
    offsets = torch.zeros(template.num_vertices, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([offsets], lr=config.lr)
    generator = torch.Generator().manual_seed(0)
    iters = config.iters if max_iters is None else min(config.iters, max_iters)
    for _ in tqdm(range(iters), desc="fit: surface", disable=not progress, leave=False):
        batch = frames[torch.randint(len(frames), (min(config.batch, len(frames)),), generator=generator)]
        d = offsets * free  # (V,)
        vertices = body.vertices[batch] + d[None, :, None] * body.normals[batch]
        silhouette = soft_silhouette(vertices, faces, camera[batch].resize(size), size)
        loss = (
            (silhouette - small[batch]).abs().mean()
            + config.smooth * (d[edges[:, 0]] - d[edges[:, 1]]).square().mean()
            + config.magnitude * d.square().mean()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            offsets.clamp_(config.low, config.high)
    return (offsets * free).detach().cpu().numpy().astype(np.float32)
