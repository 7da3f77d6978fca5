"""Mesh geometry shared by every template: normals and the expanded mesh."""

from __future__ import annotations

import torch

COMPILED_CPU_POSING = True  # vertex normals and skinning with Numba loops on a CPU when no gradient is needed


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted (unnormalised) face normals.

    Args:
        vertices: (B, V, 3)
        faces: (F, 3) long, counter-clockwise seen from outside
    Returns:
        (B, F, 3); the length of each is twice the triangle's area.
    """
    v0, v1, v2 = (vertices.index_select(1, faces[:, i]) for i in range(3))  # (B, F, 3) each
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)


def vertex_faces(faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """The faces around each vertex: (V, D) long, D the largest valence, padded with F.

    Args:
        faces: (F, 3) long
        num_vertices: V
    """
    corner_vertex = faces.t().reshape(-1)  # (3F,) corner k of every face, then k + 1
    corner_face = torch.arange(len(faces), device=faces.device).repeat(3)
    order = torch.argsort(corner_vertex, stable=True)
    counts = torch.bincount(corner_vertex, minlength=num_vertices)  # (V,) valence
    vertex = corner_vertex[order]
    slot = torch.arange(len(order), device=faces.device) - (counts.cumsum(0) - counts)[vertex]
    table = torch.full((num_vertices, int(counts.max())), len(faces), dtype=torch.long, device=faces.device)
    table[vertex, slot] = corner_face[order]
    return table


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor, adjacency: torch.Tensor | None = None) -> torch.Tensor:
    """Unit vertex normals: the area-weighted mean of the adjacent face normals.

    Args:
        vertices: (B, V, 3)
        faces: (F, 3) long
        adjacency: ``vertex_faces(faces, V)``, when the caller keeps it (it depends on the
            topology only).
    Returns:
        (B, V, 3) unit vectors (zero for a vertex no face uses). On a CPU without gradients,
        computed by a compiled loop (``cpu_posing``; same values to float rounding).
    """
    B, V = vertices.shape[:2]
    if (
        COMPILED_CPU_POSING
        and vertices.device.type == "cpu"
        and vertices.dtype == torch.float32
        and not (torch.is_grad_enabled() and vertices.requires_grad)
    ):
        from ram_avatar.body.cpu_posing import vertex_normals_cpu  # numba: imported only when used

        return vertex_normals_cpu(vertices, faces)
    adjacency = vertex_faces(faces, V) if adjacency is None else adjacency
    normals = face_normals(vertices, faces)  # (B, F, 3)
    padded = torch.cat([normals, normals.new_zeros(B, 1, 3)], 1)  # the padding face F: no normal
    # A gather and a sum rather than a scatter (index_add) into the vertices: ~5x faster on CPU.
    summed = padded.index_select(1, adjacency.view(-1)).view(B, V, -1, 3).sum(2)
    return torch.nn.functional.normalize(summed, dim=-1, eps=1e-12)


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
