"""Framing: the camera an avatar is rendered through, as the training crops saw the subject.

A level front camera with focal length ``focal`` (pixels at the avatar's ``image_size``) follows
the body on the ground plane, keeping the pelvis ``pelvis_depth`` metres away and at ``pelvis_uv``
(fractions of the width and height) when the body is at the motion's median height, so jumps and
crouches still move it up and down. ``avatar.json``'s ``framing`` holds the three numbers;
:func:`subject_framing` measures them on a tracked subject.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ram_avatar.body.layout import SmplxPose
from ram_avatar.pipelines.driving import subject_face_local
from ram_avatar.render import Camera

CAMERA_R = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))  # world (+Y up) -> OpenCV camera, facing -Z


@dataclass
class Framing:
    """A level front camera that follows the body (see the module docstring)."""

    focal: float
    pelvis_uv: tuple[float, float]
    pelvis_depth: float

    def cameras(self, pelvis: torch.Tensor, image_size: tuple[int, int]) -> Camera:
        """B cameras for pelvis world positions (B, 3) (their y: where the body is vertically)."""
        H, W = image_size
        B = pelvis.shape[0]
        like = {"dtype": pelvis.dtype, "device": pelvis.device}
        R = torch.tensor(CAMERA_R, **like).expand(B, 3, 3)
        K = torch.tensor([[self.focal, 0, W / 2], [0, self.focal, H / 2], [0, 0, 1]], **like)
        z = self.pelvis_depth
        u, v = self.pelvis_uv
        target = torch.tensor([(u - 0.5) * W * z / self.focal, (v - 0.5) * H * z / self.focal, z], **like)
        t = target - (R @ pelvis[..., None])[..., 0]
        return Camera(K.expand(B, 3, 3), R, t, image_size)

    def to_dict(self) -> dict[str, Any]:
        """The ``framing`` of ``avatar.json``."""
        return {"focal": self.focal, "pelvis_uv": list(self.pelvis_uv), "pelvis_depth": self.pelvis_depth}

    @classmethod
    def from_dict(cls, framing: dict[str, Any]) -> Framing:
        """From the ``framing`` of ``avatar.json`` (checked by ``read_manifest``)."""
        return cls(float(framing["focal"]), tuple(framing["pelvis_uv"]), float(framing["pelvis_depth"]))


def subject_framing(subject, template, shape: torch.Tensor) -> tuple[Framing, torch.Tensor | None]:  # noqa: ANN001
    """The framing (how the training crops saw the body) and the face rig of a tracked subject."""
    device = template.faces.device
    pose = subject.pose.to(device)
    shape = shape.to(device)
    with torch.no_grad():
        rest = template(SmplxPose.zeros(1, device=device), shape[None]).joints[0]
    camera = subject.camera
    K = torch.as_tensor(np.asarray(camera.K, np.float32), device=device)
    R = torch.as_tensor(np.asarray(camera.R, np.float32), device=device)
    t = torch.as_tensor(np.asarray(camera.t, np.float32), device=device)
    pelvis = rest[0] + pose.transl  # the root rotates about the pelvis: no forward pass needed
    cam = (R @ pelvis[..., None])[..., 0] + t
    H, W = subject.image_size
    u = (K[:, 0, 0] * cam[:, 0] / cam[:, 2] + K[:, 0, 2]) / W
    v = (K[:, 1, 1] * cam[:, 1] / cam[:, 2] + K[:, 1, 2]) / H
    framing = Framing(float(K[:, 0, 0].median()), (float(u.median()), float(v.median())), float(cam[:, 2].median()))
    local = subject_face_local(subject, template, rest)
    face_rig = None
    if local is not None:
        seen = ~local.isnan().any(-1).any(-1)
        if seen.any():
            face_rig = local[seen].median(0).values.float().cpu()
    return framing, face_rig
