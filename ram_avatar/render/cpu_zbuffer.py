"""The rasterizer's z-buffer on the CPU, compiled with Numba: a plain loop over triangles.

Same rules as the vectorised PyTorch z-buffer in :mod:`ram_avatar.render.rasterizer` (which the
GPU uses): vertices snapped to 1/256 pixel, exact integer edge functions with the top-left tie
rule, the nearest surface (largest 1/z, in float32) wins, exact depth ties go to the later face.
On a CPU the vectorised version spends most of its time gathering per-triangle rows for every
candidate pixel; a compiled loop keeps each triangle in registers and is several times faster.

Numba compiles the kernel on its first call (a few seconds) and caches it on disk next to this
file (or under ``NUMBA_CACHE_DIR`` where that folder is read-only).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from ram_avatar.notices import announce_kernel_compiles

announce_kernel_compiles()  # the first run compiles the kernels below (then cached): it says so

SUBPIXEL = 256  # fixed-point units per pixel (the rasterizer's SUBPIXEL_BITS = 8)


def zbuffer_cpu(
    X: torch.Tensor,
    Y: torch.Tensor,
    z: torch.Tensor,
    faces: torch.Tensor,
    shape: tuple[int, int, int],
    cull_backfaces: bool,
    surface: bool = False,
) -> tuple[torch.Tensor, ...]:
    """The winning triangle of each pixel, or with ``surface`` the whole ``Fragments`` content.

    Args:
        X, Y: (B*V,) float32 vertex pixels in 1/256 pixel, integers (X is NaN for vertices that
            must drop their faces); z: (B*V,) float32 camera depth.
        faces: (F, 3) long, the corners of each triangle, indexing an item's V vertices.
        shape: (B, H, W).
        surface: also compute the barycentrics and depth (not differentiable), with the same
            float operations as ``rasterizer._fragments``, so the same values.
    Returns:
        Without ``surface``, (winner,): (B*H*W,) long, the winning triangle as b*F+f, -1 where
        none covers the pixel centre. With it, face_ids (B*H*W,) long (f, -1 on background),
        mask (B*H*W,) bool, bary (B*H*W, 3) and depth (B*H*W,), zero on background.
    """
    B, H, W = shape
    pixels = B * H * W
    winner = np.empty(pixels, dtype=np.int64)  # the kernel fills it
    z = z.detach().cpu().float().numpy()
    mask = np.zeros(pixels if surface else 0, dtype=np.bool_)
    bary = np.zeros((pixels if surface else 0, 3), dtype=np.float32)
    depth = np.zeros(pixels if surface else 0, dtype=np.float32)
    with np.errstate(divide="ignore"):  # z = 0: such vertices' X is NaN, their faces skipped
        inverse_depth = (1 / z).astype(np.float64)  # as the vectorised z-buffer: float32, then float64
    arrays = (X.detach().cpu().numpy(), Y.detach().cpu().numpy(), inverse_depth, z, faces.cpu().numpy())
    _rasterize_triangles(*arrays, B, H, W, cull_backfaces, winner, mask, bary, depth)
    outputs = (winner, mask, bary, depth) if surface else (winner,)
    return tuple(torch.from_numpy(a).to(X.device) for a in outputs)


@numba.njit(cache=True, nogil=True)
def _rasterize_triangles(X, Y, inverse_depth, z, faces, B, H, W, cull_backfaces, winner, mask, bary, depth):
    """numpy arrays as ``zbuffer_cpu``'s tensors; fills ``winner`` (B*H*W,), or when ``mask``
    (B*H*W,) is not empty the face ids, mask, bary and depth."""
    F, V = faces.shape[0], X.shape[0] // B
    winner[:] = -1
    best = np.zeros(B * H * W, dtype=np.float32)  # 1/z of the current winner (> 0)
    half = SUBPIXEL // 2
    surface = mask.shape[0] > 0
    for item in range(B):
        offset, base = item * V, item * H * W
        for f in range(F):
            i0, i1, i2 = offset + faces[f, 0], offset + faces[f, 1], offset + faces[f, 2]
            if math.isnan(X[i0]) or math.isnan(X[i1]) or math.isnan(X[i2]):
                continue
            x = (np.int64(X[i0]), np.int64(X[i1]), np.int64(X[i2]))
            y = (np.int64(Y[i0]), np.int64(Y[i1]), np.int64(Y[i2]))
            # Pixel centres j + 1/2 in [min x, max x), clamped to the image (top-left rule: never
            # at max): j >= ceil(v / SUBPIXEL - 1/2) = (v + half - 1) // SUBPIXEL. In integers and
            # before anything else: most triangles cover no pixel centre (1.6x faster at 32^2).
            j_low = max(0, (min(x[0], x[1], x[2]) + half - 1) // SUBPIXEL)
            j_high = min(W, (max(x[0], x[1], x[2]) + half - 1) // SUBPIXEL)
            if j_low >= j_high:
                continue
            i_low = max(0, (min(y[0], y[1], y[2]) + half - 1) // SUBPIXEL)
            i_high = min(H, (max(y[0], y[1], y[2]) + half - 1) // SUBPIXEL)
            if i_low >= i_high:
                continue
            # Twice the signed screen area: < 0 is counter-clockwise on screen (y down), front-facing.
            area = (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])
            if area == 0 or (cull_backfaces and area > 0):
                continue
            label = f if surface else item * F + f  # face id f, or b * F + f
            sign = 1 if area > 0 else -1
            # Edge k (corner k+1 -> k+2): a x + b y + c > 0 inside, the three summing to |area|; a
            # centre exactly on an edge belongs to the triangle for which it is a top or left edge.
            a0, b0 = (y[1] - y[2]) * sign, (x[2] - x[1]) * sign
            a1, b1 = (y[2] - y[0]) * sign, (x[0] - x[2]) * sign
            a2, b2 = (y[0] - y[1]) * sign, (x[1] - x[0]) * sign
            c0 = (x[1] * y[2] - x[2] * y[1]) * sign
            c1 = (x[2] * y[0] - x[0] * y[2]) * sign
            c2 = (x[0] * y[1] - x[1] * y[0]) * sign
            bias0 = 1 if a0 > 0 or (a0 == 0 and b0 > 0) else 0  # value + bias > 0: inside or owned edge
            bias1 = 1 if a1 > 0 or (a1 == 0 and b1 > 0) else 0
            bias2 = 1 if a2 > 0 or (a2 == 0 and b2 > 0) else 0
            # 1/z is affine on screen: sum_k (edge_k / |area|) / z_k.
            w0 = inverse_depth[i0] / abs(area)
            w1 = inverse_depth[i1] / abs(area)
            w2 = inverse_depth[i2] / abs(area)
            for i in range(i_low, i_high):
                py = i * SUBPIXEL + half
                for j in range(j_low, j_high):
                    px = j * SUBPIXEL + half
                    e0 = a0 * px + b0 * py + c0
                    e1 = a1 * px + b1 * py + c1
                    e2 = a2 * px + b2 * py + c2
                    if e0 + bias0 > 0 and e1 + bias1 > 0 and e2 + bias2 > 0:
                        inv_z = np.float32(e0 * w0 + e1 * w1 + e2 * w2)
                        pixel = base + i * W + j
                        if inv_z >= best[pixel]:
                            best[pixel] = inv_z
                            winner[pixel] = label
                            if surface:  # the float32 steps of rasterizer._fragments, in its order
                                mask[pixel] = True
                                total = e0 + e1 + e2
                                p0 = np.float32(e0 / total) / z[i0]
                                p1 = np.float32(e1 / total) / z[i1]
                                p2 = np.float32(e2 / total) / z[i2]
                                norm = p0 + p1 + p2
                                q0, q1, q2 = p0 / norm, p1 / norm, p2 / norm
                                bary[pixel, 0], bary[pixel, 1], bary[pixel, 2] = q0, q1, q2
                                depth[pixel] = q0 * z[i0] + q1 * z[i1] + q2 * z[i2]
