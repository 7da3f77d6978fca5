"""Pose augmentation for the prior: left/right mirroring and small rotation noise.

Mirroring a SMPL-X pose across the body's sagittal plane (x = 0; the body's left is +X):
with the reflection M = diag(-1, 1, 1), a local rotation R becomes M R M, whose axis-angle is
(x, -y, -z) of the original; and every left joint takes the (mirrored) rotation of its right
counterpart and vice versa. Translation flips its x. Mirroring twice is the identity.
"""

from __future__ import annotations

import math

import roma
import torch

from ram_avatar.body.layout import JOINT_NAMES, SmplxPose

_SWAPPED = {"left": "right", "right": "left"}
# For every joint of the 55-joint layout, the index of its mirror image (itself on the midline).
MIRROR_INDEX: tuple[int, ...] = tuple(
    JOINT_NAMES.index(_SWAPPED[name.split("_")[0]] + name[name.index("_") :]) if name.split("_")[0] in _SWAPPED else i
    for i, name in enumerate(JOINT_NAMES)
)
# The same for the 21 body joints (SMPL-X joints 1..21), indexed 0..20.
BODY_MIRROR_INDEX: tuple[int, ...] = tuple(MIRROR_INDEX[j] - 1 for j in range(1, 22))

_FLIP = torch.tensor([1.0, -1.0, -1.0])


def mirror_body_pose(body_pose: torch.Tensor) -> torch.Tensor:
    """Mirror axis-angle body poses (B, 21, 3) -> (B, 21, 3)."""
    return body_pose[:, list(BODY_MIRROR_INDEX)] * _FLIP.to(body_pose)


def mirror_pose(pose: SmplxPose) -> SmplxPose:
    """Mirror a whole SMPL-X pose (all 55 joints and the translation)."""
    full = pose.full()[:, list(MIRROR_INDEX)] * _FLIP.to(pose.transl)
    return SmplxPose.from_full(full, pose.transl * torch.tensor([-1.0, 1.0, 1.0]).to(pose.transl))


def jitter(body_pose: torch.Tensor, degrees: float) -> torch.Tensor:
    """Compose each joint rotation (B, J, 3) with a random rotation of about ``degrees`` (std per axis)."""
    noise = torch.randn_like(body_pose)
    return roma.rotvec_composition([body_pose, noise * math.radians(degrees)])
