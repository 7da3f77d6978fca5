"""Driving: any motion input turned into the poses (and face) an avatar is rendered in.

:func:`load_driving` takes a motion file (BVH, AMASS / SMPL-X .npz / .json), a video (tracked
once, cached; its face mesh, expressions and sound go with it), a subject dataset folder, a
:class:`~ram_avatar.motion.Motion` or a :class:`Driving`, and returns a :class:`Driving` at the
frame rate it is rendered at. The head's pose (:func:`head_transform`) places a face mesh on the
driven body: a tracked clip's own, else the avatar's face rig.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ram_avatar.body.layout import JOINT_NAMES, PARENTS, SmplxPose

if TYPE_CHECKING:
    from ram_avatar.pipelines.ram_avatar_pipeline import RamAvatarPipeline

HEAD = JOINT_NAMES.index("head")


@dataclass
class Driving:
    """A driving motion at the frame rate it is rendered at (T frames)."""

    pose: SmplxPose
    fps: float
    name: str
    expression: torch.Tensor | None = None  # (T, E) in the avatar's template space
    face_local: torch.Tensor | None = None  # (T, 478, 3) face mesh in the head frame; NaN rows: none
    audio_source: Path | None = None  # the clip whose sound goes with it


def chain_to(joint: int) -> list[int]:
    """Joint indices from the root down to ``joint``."""
    chain = []
    while joint >= 0:
        chain.append(joint)
        joint = PARENTS[joint]
    return chain[::-1]


def head_transform(pose: SmplxPose, rest_joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World rotation (B, 3, 3) and position (B, 3) of the head joint, by forward kinematics.

    Args:
        pose: batch B; rotations are local, in world axes at the rest pose (SMPL-X convention).
        rest_joints: (55, 3) the template's joints at zero pose for the subject's shape.
    """
    import roma

    full = pose.full()
    rotation = torch.eye(3, dtype=full.dtype, device=full.device).expand(pose.batch_size, 3, 3)
    position = rest_joints[0].to(full) + pose.transl
    for parent, joint in itertools.pairwise(chain_to(HEAD)):
        rotation = rotation @ roma.rotvec_to_rotmat(full[:, parent])
        position = position + (rotation @ (rest_joints[joint] - rest_joints[parent]).to(full)[:, None])[..., 0]
    return rotation @ roma.rotvec_to_rotmat(full[:, HEAD]), position


def subject_face_local(subject, template, rest_joints: torch.Tensor) -> torch.Tensor | None:  # noqa: ANN001
    """(N, 478, 3) a tracked subject's face mesh in its head joint's frame (metres); rows of frames
    without a detected face are NaN. None when the subject has no 3D face mesh."""
    mesh = subject.keypoints.get("face_mesh")
    if mesh is None:
        return None
    camera = subject.camera
    R, t = torch.as_tensor(np.asarray(camera.R, np.float32)), torch.as_tensor(np.asarray(camera.t, np.float32))
    world = (torch.as_tensor(np.asarray(mesh, np.float32)) - t[:, None]) @ R  # R^T (x - t), as rows
    rotation, position = head_transform(subject.pose.to("cpu"), rest_joints.cpu())
    local = (world - position[:, None]) @ rotation
    found = torch.as_tensor(np.asarray(subject.keypoints["face"])[..., 2] > 0).any(-1)
    return torch.where(found[:, None, None], local, torch.full_like(local, float("nan")))


def load_driving(
    pipe: RamAvatarPipeline, motion: Any, fps: float | None = None, max_frames: int | None = None, progress: bool = True
) -> Driving:
    """Any motion source -> :class:`Driving` for the avatar ``pipe``, at ``fps`` (default: the MDA
    decoder's rate, else the avatar's), at most ``max_frames`` frames (see the module docstring
    for what ``motion`` may be). A clip's expressions are kept when it was tracked with the
    avatar's template. Only the frames kept are resampled (and of a motion file, only those
    read); rates and frame counts are checked against ``ram_avatar.limits`` first."""
    from ram_avatar.data import load_subject
    from ram_avatar.motion import VIDEO_EXTENSIONS, Motion, load_motion
    from ram_avatar.motion.io import tracked_clip
    from ram_avatar.motion.sequence import canonicalise, resample

    fps = float(fps or (pipe.decoder.fps if pipe.decoder is not None else pipe.fps))
    if isinstance(motion, Driving):
        driving = motion
    elif isinstance(motion, Motion):
        driving = Driving(motion.pose, motion.fps, motion.name)
    else:
        path = Path(motion)
        is_video = path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS
        if is_video or (path.is_dir() and (path / "meta.json").is_file()):
            subject = load_subject(tracked_clip(path, progress) if is_video else path)
            expression = None
            if subject.template.name == pipe.template_name:
                expression = torch.as_tensor(np.asarray(subject.expression, np.float32))
            face = subject_face_local(subject, pipe.template, _subject_rest_joints(pipe, subject))
            driving = Driving(
                canonicalise(subject.pose), subject.fps, path.stem, expression, face, path if is_video else None
            )
        else:
            motion = load_motion(path, fps, max_frames=max_frames)
            driving = Driving(motion.pose, motion.fps, motion.name)
    if driving.pose.batch_size == 0:
        raise ValueError(f"the motion {driving.name} has no frames")
    if abs(driving.fps - fps) > 1e-6:
        pose = resample(driving.pose, driving.fps, fps, max_frames, driving.name)
        T = pose.batch_size
        driving = replace(
            driving,
            pose=pose,
            fps=fps,
            expression=resample_nearest(driving.expression, driving.fps, fps, T),
            face_local=resample_nearest(driving.face_local, driving.fps, fps, T),
        )
    if max_frames is not None and driving.pose.batch_size > max_frames:
        keep = slice(0, max_frames)
        driving = replace(
            driving,
            pose=driving.pose[keep],
            expression=None if driving.expression is None else driving.expression[keep],
            face_local=None if driving.face_local is None else driving.face_local[keep],
        )
    return driving


def resample_nearest(values: torch.Tensor | None, fps: float, new_fps: float, count: int) -> torch.Tensor | None:
    """Per-frame values (N, ...) resampled to ``count`` frames at ``new_fps`` (nearest frame)."""
    if values is None:
        return None
    index = (torch.arange(count, dtype=torch.float64) * fps / new_fps).round().long().clamp(max=len(values) - 1)
    return values[index]


def _subject_rest_joints(pipe: RamAvatarPipeline, subject) -> torch.Tensor:  # noqa: ANN001
    """Rest joints (55, 3) of a tracked driving subject's own body (its face mesh hangs off them)."""
    if subject.template.name != pipe.template_name:
        return pipe.rest_joints()
    shape = torch.as_tensor(np.asarray(subject.shape, np.float32), device=pipe.device)[None]
    with torch.no_grad():
        return pipe.template(SmplxPose.zeros(1, device=pipe.device), shape).joints[0]
