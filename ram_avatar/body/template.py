"""One interface for every body template: SMPL-X-layout pose in, posed mesh out."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ram_avatar.body.geometry import vertex_faces, vertex_normals
from ram_avatar.body.layout import SmplxPose


@dataclass
class BodyOutput:
    """A posed batch of template meshes, in the SMPL-X world frame (metres, +Y up, facing +Z)."""

    vertices: torch.Tensor  # (B, V, 3) posed vertices
    joints: torch.Tensor  # (B, 55, 3) SMPL-X-layout joint positions
    normals: torch.Tensor  # (B, V, 3) unit vertex normals of the posed mesh

    def expanded(self, distance: float) -> torch.Tensor:
        """The posed mesh pushed out along its vertex normals by ``distance`` metres: (B, V, 3)."""
        return self.vertices + distance * self.normals


class BodyTemplate(torch.nn.Module):
    """Base class of the body templates (``anny``, ``smplx``).

    Attributes every backend sets (as buffers, so ``.to(device)`` moves them):
        faces:      (F, 3) long, triangle vertex indices, counter-clockwise seen from outside
        uvs:        (T, 2) float, texture coordinates in [0, 1], v up (OpenGL convention)
        uv_faces:   (F, 3) long, indices into ``uvs`` per triangle corner (UV seams split verts)
        canonical:  (V, 3) float, rest-pose vertices of the template's default shape, scaled
                    into [-1, 1]^3 (the same for every frame and subject: a per-vertex code)
        shape_dim / expression_dim: sizes of the template's own shape and expression spaces
    """

    name: str = "base"
    shape_dim: int = 0
    expression_dim: int = 0

    def forward(
        self,
        pose: SmplxPose,
        shape: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        offsets: torch.Tensor | None = None,
    ) -> BodyOutput:
        """Pose the body.

        Args:
            pose: SMPL-X-layout pose, batch B.
            shape: (B or 1, shape_dim) in the template's own shape space; None = default.
            expression: (B or 1, expression_dim) in the template's own space; None = neutral.
            offsets: (V,) metres each vertex is moved along the posed body's normal (a person's
                clothes, hair and build beyond the shape space: ``ram_avatar.tracking.surface``);
                None = none. Joints do not move.
        """
        vertices, joints = self.pose_vertices(pose, shape, expression)
        adjacency = getattr(self, "_vertex_faces", None)
        if adjacency is None or adjacency.device != self.faces.device:  # once per device
            adjacency = self._vertex_faces = vertex_faces(self.faces, vertices.shape[1])
        normals = vertex_normals(vertices, self.faces, adjacency)
        if offsets is not None:
            vertices = vertices + offsets.to(vertices)[:, None] * normals  # (B, V, 3)
            normals = vertex_normals(vertices, self.faces, adjacency)
        return BodyOutput(vertices=vertices, joints=joints, normals=normals)

    def pose_vertices(
        self,
        pose: SmplxPose,
        shape: torch.Tensor | None,
        expression: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backend hook: posed vertices (B, V, 3) and joints (B, 55, 3)."""
        raise NotImplementedError

    def default_shape(self, batch_size: int = 1) -> torch.Tensor:
        """The template's neutral shape parameters, (batch_size, shape_dim)."""
        raise NotImplementedError

    @property
    def num_vertices(self) -> int:
        return self.canonical.shape[0]

    @staticmethod
    def normalise_canonical(rest_vertices: torch.Tensor) -> torch.Tensor:
        """Scale rest vertices (V, 3) into [-1, 1]^3, keeping aspect ratio, centred on the box."""
        low, high = rest_vertices.min(0).values, rest_vertices.max(0).values
        return (rest_vertices - (low + high) / 2) / ((high - low).max() / 2)
