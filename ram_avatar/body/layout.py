"""The SMPL-X pose layout every part of ram-avatar speaks.

Tracker output, mocap imports, AMASS / SMPLer-X files and the motion prior all store a pose as
SMPL-X axis-angle parameters, whatever body template renders it:

    global_orient   (B, 3)      root (pelvis) rotation
    body_pose       (B, 21, 3)  SMPL-X joints 1..21 (hips .. wrists)
    jaw_pose        (B, 3)      joint 22
    leye_pose       (B, 3)      joint 23
    reye_pose       (B, 3)      joint 24
    left_hand_pose  (B, 15, 3)  joints 25..39, flat-hand convention (zero = open, flat hand,
                                like smplx's ``flat_hand_mean=True``)
    right_hand_pose (B, 15, 3)  joints 40..54
    transl          (B, 3)      metres, added to the posed body (as SMPL-X does)

World frame: SMPL-X's, metres, +Y up, the body facing +Z at zero pose, its left side at +X.
Rotations are local (relative to the parent joint), axis-angle, in the axes of that world frame
at the rest (T-)pose — the SMPL-X convention.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

JOINT_NAMES: tuple[str, ...] = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "jaw",
    "left_eye",
    "right_eye",
    "left_index1",
    "left_index2",
    "left_index3",
    "left_middle1",
    "left_middle2",
    "left_middle3",
    "left_pinky1",
    "left_pinky2",
    "left_pinky3",
    "left_ring1",
    "left_ring2",
    "left_ring3",
    "left_thumb1",
    "left_thumb2",
    "left_thumb3",
    "right_index1",
    "right_index2",
    "right_index3",
    "right_middle1",
    "right_middle2",
    "right_middle3",
    "right_pinky1",
    "right_pinky2",
    "right_pinky3",
    "right_ring1",
    "right_ring2",
    "right_ring3",
    "right_thumb1",
    "right_thumb2",
    "right_thumb3",
)
NUM_JOINTS = len(JOINT_NAMES)  # 55

# SMPL-X kinematic tree: parent of each joint (-1 for the root).
PARENTS: tuple[int, ...] = (
    -1,
    0,
    0,
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    9,
    9,
    12,
    13,
    14,
    16,
    17,
    18,
    19,
    15,
    15,
    15,
    20,
    25,
    26,
    20,
    28,
    29,
    20,
    31,
    32,
    20,
    34,
    35,
    20,
    37,
    38,
    21,
    40,
    41,
    21,
    43,
    44,
    21,
    46,
    47,
    21,
    49,
    50,
    21,
    52,
    53,
)

# Parameter name -> (first joint index, number of joints) in the 55-joint layout.
POSE_PARTS: dict[str, tuple[int, int]] = {
    "global_orient": (0, 1),
    "body_pose": (1, 21),
    "jaw_pose": (22, 1),
    "leye_pose": (23, 1),
    "reye_pose": (24, 1),
    "left_hand_pose": (25, 15),
    "right_hand_pose": (40, 15),
}


@dataclass
class SmplxPose:
    """A batch of SMPL-X-layout poses (see the module docstring for shapes and conventions)."""

    global_orient: torch.Tensor  # (B, 3)
    body_pose: torch.Tensor  # (B, 21, 3)
    jaw_pose: torch.Tensor  # (B, 3)
    leye_pose: torch.Tensor  # (B, 3)
    reye_pose: torch.Tensor  # (B, 3)
    left_hand_pose: torch.Tensor  # (B, 15, 3)
    right_hand_pose: torch.Tensor  # (B, 15, 3)
    transl: torch.Tensor  # (B, 3)

    def __post_init__(self) -> None:
        batch = self.transl.shape[0] if self.transl.dim() == 2 else None
        for name, (_, count) in {**POSE_PARTS, "transl": (0, 1)}.items():
            value = getattr(self, name)
            expected = (batch, 3) if count == 1 else (batch, count, 3)
            if tuple(value.shape) != expected:
                raise ValueError(f"SmplxPose.{name} must have shape {expected} (B={batch}), got {tuple(value.shape)}")

    @property
    def batch_size(self) -> int:
        return self.transl.shape[0]

    @classmethod
    def zeros(
        cls,
        batch_size: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> SmplxPose:
        """The rest (T-)pose at the origin."""
        return cls.from_full(
            torch.zeros(batch_size, NUM_JOINTS, 3, device=device, dtype=dtype),
            torch.zeros(batch_size, 3, device=device, dtype=dtype),
        )

    @classmethod
    def from_full(cls, full_pose: torch.Tensor, transl: torch.Tensor) -> SmplxPose:
        """From all 55 joint rotations (B, 55, 3) and a translation (B, 3)."""
        if full_pose.dim() != 3 or full_pose.shape[1:] != (NUM_JOINTS, 3):
            raise ValueError(f"full_pose must be (B, {NUM_JOINTS}, 3), got {tuple(full_pose.shape)}")
        parts = {}
        for name, (start, count) in POSE_PARTS.items():
            part = full_pose[:, start : start + count]
            parts[name] = part[:, 0] if count == 1 else part
        return cls(**parts, transl=transl)

    def full(self) -> torch.Tensor:
        """All 55 joint rotations, (B, 55, 3), joint 0 being the global orientation."""
        parts = []
        for name, (_, count) in POSE_PARTS.items():
            value = getattr(self, name)
            parts.append(value[:, None] if count == 1 else value)
        return torch.cat(parts, dim=1)

    def to(self, *args, **kwargs) -> SmplxPose:
        return SmplxPose(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def __getitem__(self, index) -> SmplxPose:
        """Select frames, e.g. ``pose[3:5]`` or ``pose[[0, 2]]``; keeps the batch dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return SmplxPose(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Plain float32 arrays keyed by parameter name (what the dataset files store)."""
        return {f.name: getattr(self, f.name).detach().cpu().numpy().astype(np.float32) for f in fields(self)}

    @classmethod
    def from_numpy(
        cls,
        arrays: dict[str, np.ndarray],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> SmplxPose:
        """Inverse of :meth:`to_numpy`; a missing key or a wrong shape raises ``ValueError``."""
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in arrays]
        if missing:
            raise ValueError(f"SMPL-X pose arrays are missing {missing}; expected keys {names}")
        return cls(**{name: torch.as_tensor(np.asarray(arrays[name]), dtype=dtype, device=device) for name in names})
