"""Body templates: SMPL-X-layout poses in, posed template meshes out.

``load_template("anny")`` (default, no registration) or ``load_template("smplx", model_path=...)``.
"""

from __future__ import annotations

import functools
import os

import torch

from ram_avatar.body.geometry import expand_mesh, face_normals, vertex_normals
from ram_avatar.body.layout import JOINT_NAMES, NUM_JOINTS, PARENTS, SmplxPose
from ram_avatar.body.template import BodyOutput, BodyTemplate

TEMPLATES = ("anny", "smplx")


def load_template(
    name: str = "anny",
    device: torch.device | str | None = None,
    model_path: str | os.PathLike | None = None,
) -> BodyTemplate:
    """A body template, built once per process and argument set (building Anny takes ~1.4 s).

    Args:
        name: ``"anny"`` (default) or ``"smplx"``.
        device: where its buffers live; default CPU.
        model_path: SMPL-X only: a folder holding ``SMPLX_NEUTRAL.npz`` (or the file itself);
            default ``$RAM_AVATAR_SMPLX_DIR``.
    """
    device = str(torch.device(device or "cpu"))
    path = None if model_path is None else str(model_path)
    return _load_template(name, device, path)


@functools.lru_cache(maxsize=8)
def _load_template(name: str, device: str, model_path: str | None) -> BodyTemplate:
    if name == "anny":
        from ram_avatar.body.anny_template import AnnyTemplate

        template: BodyTemplate = AnnyTemplate()
    elif name == "smplx":
        from ram_avatar.body.smplx_template import SmplxTemplate

        template = SmplxTemplate(model_path)
    else:
        raise ValueError(f"Unknown body template {name!r}; choose one of {TEMPLATES}")
    return template.to(device).eval()


__all__ = [
    "BodyOutput",
    "BodyTemplate",
    "JOINT_NAMES",
    "NUM_JOINTS",
    "PARENTS",
    "SmplxPose",
    "TEMPLATES",
    "expand_mesh",
    "face_normals",
    "load_template",
    "vertex_normals",
]
