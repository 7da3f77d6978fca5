"""Optional ``rasterize(..., backend="pytorch3d")``: PyTorch3D's rasterizer behind our conventions.

PyTorch3D (no CPU wheels; build it from source) takes vertices in its NDC space: +X left, +Y
up, the shorter image side spanning [-1, 1] (so one pixel is 2 / min(H, W) units on both
axes), z the camera depth for perspective correction. Its output row 0 / column 0 is the top-
left of the image, like ours, and it samples pixel centres too.
"""

from __future__ import annotations

import torch

from ram_avatar.render.camera import Camera
from ram_avatar.render.rasterizer import Fragments


def rasterize_pytorch3d(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    image_size: tuple[int, int],
    near: float = 1e-2,
    cull_backfaces: bool = False,
) -> Fragments:
    """``rasterize`` through ``pytorch3d.renderer.mesh.rasterize_meshes`` (same arguments)."""
    try:
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
        from pytorch3d.structures import Meshes
    except ImportError as error:
        raise ImportError(
            "rasterize(..., backend='pytorch3d') needs PyTorch3D, which has no CPU wheels: build it "
            "with `pip install 'git+https://github.com/facebookresearch/pytorch3d.git'`, or use "
            "backend='torch'."
        ) from error

    H, W = image_size
    B, F = vertices.shape[0], faces.shape[0]
    pixels, depth = camera.project(vertices)
    scale = 2.0 / min(H, W)
    ndc = torch.stack([(W / 2 - pixels[..., 0]) * scale, (H / 2 - pixels[..., 1]) * scale, depth], dim=-1)
    # Drop the triangles we drop (a corner at depth <= near) by collapsing them onto one vertex,
    # which keeps face indices unchanged.
    behind = (depth <= near)[:, faces].any(-1, keepdim=True)  # (B, F, 1)
    batch_faces = torch.where(behind, faces[:, :1], faces)  # (B, F, 3)
    # Projected and NDC frames differ by a 180 degree turn, so screen winding and PyTorch3D's
    # front-face test (counter-clockwise in NDC) agree with ours.
    face_ids, depth_buffer, bary, _ = rasterize_meshes(
        Meshes(verts=list(ndc), faces=list(batch_faces)),
        image_size=(H, W),
        blur_radius=0.0,
        faces_per_pixel=1,
        perspective_correct=True,
        cull_backfaces=cull_backfaces,
    )
    face_ids = face_ids[..., 0]  # (B, H, W), packed over the batch: b * F + f, -1 on background
    mask = face_ids >= 0
    face_ids = torch.where(mask, face_ids - F * torch.arange(B, device=face_ids.device)[:, None, None], -1)
    return Fragments(
        face_ids=face_ids,
        bary=bary[..., 0, :] * mask[..., None],
        depth=depth_buffer[..., 0] * mask,
        mask=mask,
    )
