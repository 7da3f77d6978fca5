"""A small synthetic scene for the tracking-stage tests (surface offsets, alignment)."""

from __future__ import annotations

import torch

from ram_avatar.body import SmplxPose
from ram_avatar.render import Camera


def turning_scene(frames: int, size: int, turn: float, depth: float, focal: float) -> tuple[SmplxPose, Camera]:
    """``frames`` poses of a body turning from -``turn`` to +``turn`` radians about the vertical and
    lowering its raised arms, ``depth`` metres in front of a camera at the origin (``size``² pixels)."""
    pose = SmplxPose.zeros(frames)
    pose.global_orient[:, 1] = torch.linspace(-turn, turn, frames)
    pose.body_pose[:, 15, 2] = torch.linspace(-1.2, 0.0, frames)
    pose.body_pose[:, 16, 2] = torch.linspace(1.2, 0.0, frames)
    pose.transl[:, 2] = -depth
    camera = Camera.look_at(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, -1.0]]), focal=focal, image_size=(size, size))
    camera = Camera(*(m.expand(frames, *m.shape[1:]) for m in (camera.K, camera.R, camera.t)), (size, size))
    return pose, camera
