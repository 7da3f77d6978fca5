"""A motion clip (SMPL-X-layout poses + frame rate), resampling, and the shared clean-up steps.

Every importer ends with the same conventions (``canonicalise``): the SMPL-X world (+Y up,
metres), the body facing +Z at the first frame, the root starting at the horizontal origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import roma
import torch

from ram_avatar.body.layout import SmplxPose
from ram_avatar.limits import check_limit

MB = 1 << 20  # bytes in a megabyte, as the file size limits count them


class MotionFormatError(ValueError):
    """A motion file is malformed or not in a supported format; the message says which file,
    which field, and what was expected."""


@dataclass
class Motion:
    """A motion clip: ``pose`` (batch T) in the SMPL-X world frame (+Y up, facing +Z, metres).

    ``joint_map`` records, for imported skeletons (BVH), which source joint drives each SMPL-X
    joint; SMPL-X joints absent from it stay at rest. It is empty for SMPL-family files.
    """

    pose: SmplxPose
    fps: float
    name: str
    source: str
    joint_map: dict[str, str] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return self.pose.batch_size

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame."""
        return (self.num_frames - 1) / self.fps

    def resample(self, fps: float, max_frames: int | None = None) -> Motion:
        """The clip at another frame rate, same first frame, at most ``max_frames`` frames (see
        :func:`resample`)."""
        pose = resample(self.pose, self.fps, fps, max_frames, self.name)
        return Motion(pose, float(fps), self.name, self.source, dict(self.joint_map))


@dataclass(frozen=True)
class Resampling:
    """Which source frames make each output frame: frame i is the slerp (rotations) and lerp
    (translation) of source frames ``lower[i]`` and ``upper[i]`` by ``weight[i]``."""

    lower: np.ndarray  # (T',) int64
    upper: np.ndarray  # (T',) int64; equal to lower where the weight is 0
    weight: np.ndarray  # (T',) float64 in [0, 1)

    @property
    def sources(self) -> np.ndarray:
        """The source frames used, sorted: the only ones a reader needs to keep."""
        return np.union1d(self.lower, self.upper)

    def among(self, sources: np.ndarray) -> Resampling:
        """The same plan for a clip of just the source frames ``sources`` (sorted, holding
        :attr:`sources`)."""
        return Resampling(np.searchsorted(sources, self.lower), np.searchsorted(sources, self.upper), self.weight)


def resampled_count(count: int, fps: float, new_fps: float) -> int:
    """Frames of a ``count``-frame clip at ``fps`` resampled to ``new_fps`` (computed, nothing
    allocated): frame i is at time i / new_fps, up to the last whole frame within the clip."""
    return int(math.floor((count - 1) * new_fps / fps + 1e-6)) + 1


def plan_resampling(
    count: int, fps: float, new_fps: float, max_frames: int | None = None, what: str = "the motion"
) -> Resampling:
    """The :class:`Resampling` of a ``count``-frame clip from ``fps`` to ``new_fps``, keeping at
    most ``max_frames`` frames. The rates and the number of frames kept are checked against
    the limits (``ram_avatar.limits``) before anything is allocated; ``what`` names the input."""
    check_limit("fps", fps, what)
    check_limit("fps", new_fps, f"{what} (the requested rate)")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if count < 1:
        raise MotionFormatError(f"{what} has no frames")
    kept = resampled_count(count, fps, new_fps)
    kept = kept if max_frames is None else min(kept, max_frames)
    check_limit("motion_frames", kept, what)
    times = np.arange(kept, dtype=np.float64) * (fps / new_fps)
    lower = np.minimum(np.floor(times).astype(np.int64), count - 1)
    weight = times - lower
    upper = np.where(weight > 0, np.minimum(lower + 1, count - 1), lower)
    return Resampling(lower, upper, weight)


def resample(
    pose: SmplxPose, fps: float, new_fps: float, max_frames: int | None = None, what: str = "the motion"
) -> SmplxPose:
    """Resample a pose sequence (batch T) from ``fps`` to ``new_fps``, keeping at most
    ``max_frames`` frames (only those are computed).

    Frame i of the result is at time i / new_fps; the result ends at the last whole frame
    within the clip, so the duration is kept to within one new frame. Joint rotations are
    interpolated by quaternion slerp, translations linearly. Rates and frame counts are
    checked first (see :func:`plan_resampling`).
    """
    plan = plan_resampling(pose.batch_size, fps, new_fps, max_frames, what)
    if fps == new_fps:  # nothing to interpolate: the leading frames as they are
        return pose[: len(plan.lower)]
    return apply_resampling(pose, plan)


def apply_resampling(pose: SmplxPose, plan: Resampling) -> SmplxPose:
    """The output frames of ``plan`` from ``pose`` (its source frames); only the source frames
    the plan uses are converted."""
    if not plan.weight.any():  # every output frame is a source frame: copied exactly
        return pose[torch.from_numpy(plan.lower)]
    used = plan.sources
    pose, plan = pose[torch.from_numpy(used)], plan.among(used)
    device = pose.transl.device
    lower, upper = torch.from_numpy(plan.lower).to(device), torch.from_numpy(plan.upper).to(device)
    weight = torch.from_numpy(plan.weight).to(pose.transl.dtype).to(device)
    quats = roma.rotvec_to_unitquat(pose.full())  # (T, 55, 4)
    full = roma.unitquat_to_rotvec(_slerp(quats[lower], quats[upper], weight[:, None, None]))
    transl = torch.lerp(pose.transl[lower], pose.transl[upper], weight[:, None])
    return SmplxPose.from_full(full, transl)


def _slerp(q0: torch.Tensor, q1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Shortest-arc slerp of unit quaternions (..., 4) with weights broadcasting to (..., 1)."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    angle = torch.acos(dot.abs().clamp(max=1.0))
    sin = torch.sin(angle)
    near = sin < 1e-6  # nearly equal: linear interpolation is exact enough and stable
    safe = torch.where(near, torch.ones_like(sin), sin)
    a = torch.where(near, 1 - w, torch.sin((1 - w) * angle) / safe)
    b = torch.where(near, w, torch.sin(w * angle) / safe)
    return torch.nn.functional.normalize(a * q0 + b * q1, dim=-1)


def check_finite(array: np.ndarray, what: str, frames: np.ndarray | None = None) -> None:
    """Raise ``MotionFormatError`` naming ``what`` and the first frame holding NaN, inf or a
    number beyond float32's range (poses are stored as float32, where it would become inf).

    ``frames``: the frame number of each row of ``array``, when it holds only some frames.
    """
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(array) | (np.abs(array) > np.finfo(np.float32).max)
    if bad.any():
        row = int(np.argwhere(bad)[0][0]) if array.ndim else 0
        frame = row if frames is None else int(frames[row])
        raise MotionFormatError(
            f"{what} holds NaN or infinite values, or numbers too large for float32 "
            f"(first at frame {frame}); repair or re-export the file"
        )


def upright_rotation(global_orient: torch.Tensor) -> torch.Tensor:
    """The axis-aligned world rotation (3, 3) that stands a clip up in the SMPL-X frame.

    The body's up direction (the root rotation applied to +Y), averaged over the clip, is
    snapped to the nearest axis: +Y needs nothing; +Z (AMASS, Z-up) is turned -90 degrees about
    X; -Y (OpenCV camera coordinates, as SMPLer-X-like estimators write) 180 degrees about X,
    which also turns a body facing the camera (-Z) to face +Z; +-X a quarter turn about Z.

    Args:
        global_orient: (T, 3) axis-angle root rotations.
    """
    up = (roma.rotvec_to_rotmat(global_orient.double())[..., 1]).mean(0)  # (3,) mean of R @ +Y
    axis = int(up.abs().argmax())
    sign = 1.0 if up[axis] > 0 else -1.0
    if axis == 1:
        rotvec = [0.0, 0.0, 0.0] if sign > 0 else [math.pi, 0.0, 0.0]
    elif axis == 2:
        rotvec = [-sign * math.pi / 2, 0.0, 0.0]
    else:
        rotvec = [0.0, 0.0, sign * math.pi / 2]
    return roma.rotvec_to_rotmat(torch.tensor(rotvec, dtype=torch.float64))


def rotate_world(pose: SmplxPose, rotation: torch.Tensor) -> SmplxPose:
    """Turn a whole clip by a world rotation (3, 3): the root orientation and the translation.

    The translation is rotated about the origin; the small offset this leaves (the template's
    pelvis is not at the origin of every body model) is constant over the clip.
    """
    R = rotation.to(pose.transl)
    orient = roma.rotmat_to_rotvec(R @ roma.rotvec_to_rotmat(pose.global_orient))
    return replace(pose, global_orient=orient, transl=pose.transl @ R.T)


def canonicalise(pose: SmplxPose) -> SmplxPose:
    """Turn the clip about +Y so its first frame faces +Z, and move the root so it starts at the
    horizontal origin (the vertical translation is left as it is)."""
    forward = roma.rotvec_to_rotmat(pose.global_orient[:1].double())[0, :, 2]  # root's +Z
    yaw = math.atan2(float(forward[0]), float(forward[2]))
    turned = rotate_world(pose, roma.rotvec_to_rotmat(torch.tensor([0.0, -yaw, 0.0], dtype=torch.float64)))
    start = turned.transl[:1].clone()
    start[:, 1] = 0
    return replace(turned, transl=turned.transl - start)
