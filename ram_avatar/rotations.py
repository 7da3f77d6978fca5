"""Rotation conversions used by the pose models: axis-angle <-> matrix <-> 6D, slerp, angles.

The 6D representation (Zhou et al., CVPR 2019) is the first two columns of the rotation matrix,
concatenated: ``[R[:, 0], R[:, 1]]``. Unlike axis-angle it is continuous, which is why networks
take and produce it; Gram-Schmidt turns any 6 numbers back into a rotation.
"""

from __future__ import annotations

import math

import roma
import torch


def aa_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) -> rotation matrices (..., 3, 3)."""
    return roma.rotvec_to_rotmat(rotvec)


def matrix_to_aa(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3), angles in [0, pi]."""
    return roma.rotmat_to_rotvec(matrix)


def matrix_to_6d(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> 6D (..., 6): the first two columns."""
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def sixd_to_matrix(sixd: torch.Tensor) -> torch.Tensor:
    """6D (..., 6) -> rotation matrices (..., 3, 3) by Gram-Schmidt (any input is valid)."""
    columns = torch.stack([sixd[..., :3], sixd[..., 3:]], dim=-1)  # (..., 3, 2)
    return roma.special_gramschmidt(columns, epsilon=1e-8)


def aa_to_6d(rotvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) -> 6D (..., 6)."""
    return matrix_to_6d(aa_to_matrix(rotvec))


def sixd_to_aa(sixd: torch.Tensor) -> torch.Tensor:
    """6D (..., 6) -> axis-angle (..., 3)."""
    return matrix_to_aa(sixd_to_matrix(sixd))


def angle_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle in radians between rotation matrices (..., 3, 3) -> (...)."""
    return roma.rotmat_geodesic_distance(a, b)


def angle_between_aa(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle in degrees between axis-angle rotations (..., 3) -> (...)."""
    return angle_between(aa_to_matrix(a), aa_to_matrix(b)) * (180.0 / math.pi)


def slerp_aa(start: torch.Tensor, end: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
    """Per-rotation spherical interpolation of axis-angle rotations (..., 3).

    ``weight`` 0 gives ``start``, 1 gives ``end``; it broadcasts against (...), e.g. a per-frame
    weight of shape (T, 1) for rotations (T, J, 3). Interpolates along the shortest arc.
    """
    weight = torch.as_tensor(weight, dtype=start.dtype, device=start.device)
    delta = roma.rotvec_composition([roma.rotvec_inverse(start), end])  # start^-1 * end
    return roma.rotvec_composition([start, delta * weight[..., None]])
