"""Posing on the CPU without gradients, compiled with Numba: vertex normals and skinning.

``geometry.vertex_normals`` in PyTorch gathers every triangle's corners, takes cross products and
gathers them back per vertex: ~4 ms a frame for Anny's 27k triangles on one CPU core, an eighth
of a real-time frame; this loop accumulates each triangle's area-weighted normal into its three
corners directly (~0.25 ms). Skinning in PyTorch is a dense (V, 104) x (104, 12) product per
frame (~1.8 ms); the loop visits each vertex's few bones. Used when no gradient is needed
(driving); Numba compiles them on first use and caches them on disk, like the z-buffer's.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from ram_avatar.notices import announce_kernel_compiles

announce_kernel_compiles()  # the first run compiles the kernels below (then cached): it says so


def vertex_normals_cpu(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals (B, V, 3) float32 of ``vertices`` (B, V, 3) over ``faces`` (F, 3), as
    ``geometry.vertex_normals`` (zero for a vertex no face uses)."""
    out = np.empty(vertices.shape, dtype=np.float32)
    _vertex_normals(vertices.detach().float().numpy(), faces.numpy(), out)
    return torch.from_numpy(out)


@numba.njit(cache=True, nogil=True)
def _vertex_normals(vertices, faces, out):  # noqa: ANN001
    B, V = vertices.shape[:2]
    out[:] = 0
    for b in range(B):
        v = vertices[b]
        n = out[b]
        for f in range(faces.shape[0]):
            i, j, k = faces[f, 0], faces[f, 1], faces[f, 2]
            ax, ay, az = v[j, 0] - v[i, 0], v[j, 1] - v[i, 1], v[j, 2] - v[i, 2]
            bx, by, bz = v[k, 0] - v[i, 0], v[k, 1] - v[i, 1], v[k, 2] - v[i, 2]
            cx, cy, cz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx  # twice the area
            for corner in (i, j, k):
                n[corner, 0] += cx
                n[corner, 1] += cy
                n[corner, 2] += cz
        for p in range(V):
            length = max(np.sqrt(n[p, 0] ** 2 + n[p, 1] ** 2 + n[p, 2] ** 2), np.float32(1e-12))
            n[p, 0] /= length
            n[p, 1] /= length
            n[p, 2] /= length


def skin_cpu(
    points: torch.Tensor, transforms: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Linear blend skinning: ``points`` (B, V, 3) float32 moved by the bone ``transforms`` (B, J,
    3, 4), each vertex by its K bones ``indices`` (V, K) with ``weights`` (V, K): (B, V, 3)."""
    out = np.empty(points.shape, dtype=np.float32)
    _skin(
        points.float().numpy(), transforms.float().contiguous().numpy(), indices.numpy(), weights.float().numpy(), out
    )
    return torch.from_numpy(out)


@numba.njit(cache=True, nogil=True)
def _skin(points, transforms, indices, weights, out):  # noqa: ANN001
    B, V = points.shape[:2]
    for b in range(B):
        for v in range(V):
            x, y, z = points[b, v, 0], points[b, v, 1], points[b, v, 2]
            ox = oy = oz = np.float32(0)
            for k in range(indices.shape[1]):
                w = weights[v, k]
                if w == 0:
                    continue
                t = transforms[b, indices[v, k]]
                ox += w * (t[0, 0] * x + t[0, 1] * y + t[0, 2] * z + t[0, 3])
                oy += w * (t[1, 0] * x + t[1, 1] * y + t[1, 2] * z + t[1, 3])
                oz += w * (t[2, 0] * x + t[2, 1] * y + t[2, 2] * z + t[2, 3])
            out[b, v, 0], out[b, v, 1], out[b, v, 2] = ox, oy, oz
