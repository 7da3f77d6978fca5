"""Mesh geometry shared by every template: normals and the expanded mesh."""

from __future__ import annotations

import torch


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted (unnormalised) face normals.

    Args:
        vertices: (B, V, 3)
        faces: (F, 3) long, counter-clockwise seen from outside
    Returns:
        (B, F, 3); the length of each is twice the triangle's area.
    """
    v0, v1, v2 = (vertices[:, faces[:, i]] for i in range(3))  # (B, F, 3) each
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals: the area-weighted mean of the adjacent face normals.

    Args:
        vertices: (B, V, 3)
        faces: (F, 3) long
    Returns:
        (B, V, 3) unit vectors (zero for a vertex no face uses).
    """
    normals = face_normals(vertices, faces)  # (B, F, 3)
    out = torch.zeros_like(vertices)
    for i in range(3):
        out.index_add_(1, faces[:, i], normals)
    return torch.nn.functional.normalize(out, dim=-1, eps=1e-12)


def expand_mesh(vertices: torch.Tensor, faces: torch.Tensor, distance: float) -> torch.Tensor:
    """The mesh pushed out along its vertex normals (the dual attention's "expanded" mesh).

    Args:
        vertices: (B, V, 3)
        faces: (F, 3) long
        distance: metres along the outward normal (negative shrinks)
    Returns:
        (B, V, 3)
    """
    return vertices + distance * vertex_normals(vertices, faces)
