"""BVH motion capture: a parser, forward kinematics, and retargeting onto SMPL-X joints.

Parsing follows the format as exporters write it: any permutation of rotation channels (the
joint's rotation is the product of the axis rotations in channel order), position channels on
any joint (they replace that joint's OFFSET, as root positions do), End Sites, names with
spaces, one frame per line.

Retargeting
-----------
BVH joints have no orientation of their own: at zero rotation every joint frame is the file's
world frame and the bones lie along the OFFSETs, in whatever rest pose the rig was built (a
T-pose, an A-pose, arms down, or every bone along +X). SMPL-X's zero pose is a T-pose, also
with world-aligned joint frames. So, per frame:

1. Axes. The file's up / left / forward axes come from its rest skeleton (pelvis -> spine is
   up, right hip -> left hip is left), snapped to the nearest coordinate axes; ``A`` turns
   them into SMPL-X's (+Y up, +X left, +Z forward). World rotations become ``A G A^T``.
2. Rest correction. For each mapped SMPL-X joint ``j`` driven by BVH joint ``b``, ``C_j`` turns
   SMPL-X's rest bone of ``j`` (towards its child, ``reference.py``) onto the BVH rest bone of
   ``b`` (towards the BVH joint that drives that child): the parent's correction, then the
   smallest swing still needed. A chain bent as one piece at rest (an A-pose arm, down to the
   thumb) thus gets one correction, and twist follows the BVH joint frames. That holds while
   the rest pose is a bind pose (joint frames world-aligned in a T-, A- or arms-down pose).
   Rigs that bake the bind pose into the channels (Rokoko, Unity: every bone along +X at zero
   rotation) swing 90 degrees and more per joint, and the twist the swings imply is arbitrary
   (their right arm came out turned 180 degrees about the bone, the elbow bending backwards;
   the feet rolled 90 degrees). So where the swing exceeds 60 degrees, the correction turns
   about the bone by the quarter turn (such rigs' frames are axis-aligned) that keeps the
   joint closest to its parent over the clip (the smallest mean local rotation): a wrong
   twist adds a constant 90 or 180 degrees to every frame. Leaves (head, toes, finger tips) aim
   at their End Site, unless keeping their BVH frame as is fits the clip better by the same
   measure (some exporters write dummy End Sites).
3. Global to local. SMPL-X's global rotation is ``Q_j = G_b C_j``, so every SMPL-X bone points
   where its BVH bone points, and the local rotations are ``Q_parent^T Q_j``. Using world
   rotations folds unmapped BVH joints (``LHipJoint``, extra spine joints) into the next mapped
   joint below them; unmapped SMPL-X joints keep the identity (they stay at rest).
4. Reach. Bone directions alone do not put the hands and feet where the file has them when the
   limbs' proportions differ: AnimatedDrawings' rig has a forearm 12 % longer than its upper
   arm, SMPL-X one 10 % shorter, so a wave (upper arm below the horizontal, forearm up) lifted
   the wrist half as high above the shoulder (2.9 cm instead of 6 cm). So each arm and leg is
   then re-aimed by two-bone inverse kinematics: the wrist (ankle) goes where the file puts it
   relative to the shoulder (hip), in units of the limb's length (upper + lower bone), with the
   elbow (knee) in the file's bend plane; the hand's (foot's) world rotation is kept. Limbs in
   the SMPL-X proportions come out unchanged.
5. Root motion. The root's path is scaled by the reference leg length over the file's leg
   length (so centimetres, inches and metres all come out right and feet do not slide); the
   height is measured from standing straight: 0 when the legs are as extended as they ever get
   in the clip, positive in the air, negative crouching.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import roma
import torch

from ram_avatar.body.layout import JOINT_NAMES, PARENTS, SmplxPose
from ram_avatar.limits import check_limit
from ram_avatar.motion import reference
from ram_avatar.motion.names import assign_spine, match_names
from ram_avatar.motion.sequence import MotionFormatError, Resampling, apply_resampling, check_finite, plan_resampling

_CHANNELS = ("xposition", "yposition", "zposition", "xrotation", "yrotation", "zrotation")
_INDEX = {name: i for i, name in enumerate(JOINT_NAMES)}
_MAX_LINE = 1 << 20  # characters: a frame of 10,000 joints fits; a file without line breaks does not
# A bone turned further than this from SMPL-X's T-pose at rest (after its parent's correction)
# comes from a rest pose that is not a bind pose, whose joint frames' twist is unknown.
_FAR_FROM_REST = np.radians(60.0)
# Two-bone limbs (root, middle, end) whose end is placed by inverse kinematics.
LIMBS = tuple(
    (f"{side}_{root}", f"{side}_{middle}", f"{side}_{end}")
    for side in ("left", "right")
    for root, middle, end in (("shoulder", "elbow", "wrist"), ("hip", "knee", "ankle"))
)


@dataclass
class BvhJoint:
    name: str
    parent: int  # index into Bvh.joints, -1 for the root
    offset: np.ndarray  # (3,) from the parent joint, in the parent's frame
    channels: list[str]  # lower-case, e.g. ["xposition", ..., "zrotation"]
    end_sites: list[np.ndarray]  # (3,) offsets of End Site children


@dataclass
class Bvh:
    """A parsed BVH file: the skeleton and (K, C) channel values (degrees / file units) of K of
    its frames (all of them unless the reader was told which to keep)."""

    joints: list[BvhJoint]
    frame_time: float
    values: np.ndarray  # (K, C) float64, channels in joint order
    path: str
    frames: np.ndarray  # (K,) the frame of the file each row of values is
    frame_count: int  # frames in the file (its MOTION header)

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def parents(self) -> list[int]:
        return [j.parent for j in self.joints]

    @property
    def fps(self) -> float:
        """Frames per second (see :func:`frame_rate`)."""
        return frame_rate(self.frame_time)


def frame_rate(frame_time: float) -> float:
    """Frames per second of a Frame Time, which is usually printed rounded (.03333 for 30 fps):
    a rate within 0.5 % of a whole one is snapped to it."""
    fps = 1.0 / frame_time
    return float(round(fps)) if math.isfinite(fps) and abs(fps - round(fps)) < 0.005 * fps else fps


def read_bvh(path: str | Path, keep: Callable[[int, float], np.ndarray] | None = None) -> Bvh:
    """Parse a BVH file; anything malformed raises ``MotionFormatError`` with the line number.

    The file is read one line at a time: the HIERARCHY, the MOTION header, then the frame lines
    up to the last one kept, so memory grows with the frames kept, not with the file.
    ``keep(frame_count, fps)``, called once the header is read, gives the frames to keep
    (sorted); by default all of them. When the file's last frame is kept, the reader also
    checks that no frame lines follow it.
    """
    path = Path(path)
    where = f"BVH file {path}"
    with open(path, encoding="utf-8", errors="replace") as file:  # universal newlines: \n, \r\n, \r
        lines = _lines(file, where)
        joints = _read_hierarchy(lines, where, path.name)
        num_channels = sum(len(j.channels) for j in joints)
        # A frame line holds at least one digit and a separator per channel.
        most = os.fstat(file.fileno()).st_size // max(2 * num_channels, 1)
        count, frame_time = _read_header(lines, where, path.name, most)
        check_limit("fps", frame_rate(frame_time), path.name)
        if keep is None:
            check_limit("motion_frames", count, path.name)
            frames = np.arange(count)
        else:
            frames = np.asarray(keep(count, frame_rate(frame_time)), dtype=np.int64)
        values = _read_frames(lines, frames, count, num_channels, where)
    return Bvh(joints, frame_time, values, str(path), frames, count)


def _lines(file: TextIO, where: str) -> Iterator[tuple[int, str]]:
    """The file's non-blank lines, stripped and numbered from 1, one at a time; "JOINT Name {"
    on one line comes as two."""
    for n, line in enumerate(iter(lambda: file.readline(_MAX_LINE), ""), start=1):
        if len(line) == _MAX_LINE and not line.endswith("\n"):
            raise MotionFormatError(f"{where}, line {n}: longer than {_MAX_LINE} characters; not a BVH file")
        line = line.strip()
        if line.endswith("{") and line != "{":
            yield n, line[:-1].strip()
            yield n, "{"
        elif line:
            yield n, line


def _read_hierarchy(lines: Iterator[tuple[int, str]], where: str, file_name: str) -> list[BvhJoint]:
    """The joints of the HIERARCHY section, read up to and including the MOTION line."""
    first = next(lines, None)
    if first is None or first[1].upper() != "HIERARCHY":
        raise MotionFormatError(f"{where}: not a BVH file (the first line must be HIERARCHY)")
    joints: list[BvhJoint] = []
    stack: list[tuple[int, int]] = []  # (joint index, end-site index or -1) per open brace
    pending: tuple[int, int] | None = None
    found_motion = False
    for n, line in lines:
        keyword, *rest = line.split()
        key = keyword.upper()
        if key == "MOTION":
            found_motion = True
            break
        if key in ("ROOT", "JOINT"):
            if joints and key == "ROOT" or not stack and key == "JOINT":
                raise MotionFormatError(
                    f"{where}, line {n}: {keyword} in the wrong place (files "
                    "have one ROOT, and JOINTs inside its braces)"
                )
            joint_name = line[len(keyword) :].strip()
            if not joint_name:
                raise MotionFormatError(f"{where}, line {n}: {keyword} without a name")
            check_limit("bvh_joints", len(joints) + 1, file_name)
            parent = stack[-1][0] if stack else -1
            joints.append(BvhJoint(joint_name, parent, np.zeros(3), [], []))
            pending = (len(joints) - 1, -1)
        elif key == "END":
            if not stack:
                raise MotionFormatError(f"{where}, line {n}: End Site outside a joint")
            joints[stack[-1][0]].end_sites.append(np.zeros(3))
            pending = (stack[-1][0], len(joints[stack[-1][0]].end_sites) - 1)
        elif key == "{":
            if pending is None:
                raise MotionFormatError(f"{where}, line {n}: '{{' without a ROOT, JOINT or End Site before it")
            stack.append(pending)
            pending = None
        elif key == "}":
            if not stack:
                raise MotionFormatError(f"{where}, line {n}: unbalanced '}}'")
            stack.pop()
        elif key == "OFFSET":
            if not stack:
                raise MotionFormatError(f"{where}, line {n}: OFFSET outside a joint")
            offset = _floats(rest, 3, f"{where}, line {n}: OFFSET needs 3 numbers")
            joint, site = stack[-1]
            if site < 0:
                joints[joint].offset = offset
            else:
                joints[joint].end_sites[site] = offset
        elif key == "CHANNELS":
            if not stack or stack[-1][1] >= 0:
                raise MotionFormatError(f"{where}, line {n}: CHANNELS outside a joint")
            channels = [c.lower() for c in rest[1:]]
            if not rest or not rest[0].isdigit() or int(rest[0]) != len(channels):
                raise MotionFormatError(
                    f"{where}, line {n}: CHANNELS must give a count and that many channel names, got {' '.join(rest)!r}"
                )
            unknown = [c for c in channels if c not in _CHANNELS]
            if unknown:
                raise MotionFormatError(
                    f"{where}, line {n}: unknown channels {unknown}; expected Xposition .. Zrotation"
                )
            if len(set(channels)) != len(channels):
                raise MotionFormatError(f"{where}, line {n}: CHANNELS names a channel twice")
            joints[stack[-1][0]].channels = channels
        else:
            raise MotionFormatError(f"{where}, line {n}: unexpected {keyword!r} in the HIERARCHY")
    if not joints:
        raise MotionFormatError(f"{where}: no ROOT joint in the HIERARCHY")
    if not found_motion or stack:
        raise MotionFormatError(
            f"{where}: the file ends inside the HIERARCHY (missing '}}' or MOTION): it is truncated"
        )
    names = [j.name for j in joints]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise MotionFormatError(f"{where}: joint names must be unique, repeated: {duplicates}")
    return joints


def _floats(tokens: list[str], count: int, message: str) -> np.ndarray:
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        raise MotionFormatError(f"{message}, got {' '.join(tokens)[:80]!r}") from None
    if values.size != count:
        raise MotionFormatError(f"{message}, got {values.size}")
    return values


def _read_header(lines: Iterator[tuple[int, str]], where: str, name: str, most: int) -> tuple[int, float]:
    """(frame count, Frame Time) from the ``Frames: T`` and ``Frame Time: dt`` lines after MOTION;
    ``name``: the file's name; ``most``: the most frames the file's size leaves room for."""
    header: dict[str, str] = {}
    for key in ("frames", "frame time"):
        _, line = next(lines, (0, ""))
        if ":" not in line or line.split(":")[0].strip().lower() != key:
            raise MotionFormatError(f"{where}: MOTION must be followed by 'Frames: T' and 'Frame Time: seconds' lines")
        header[key] = line.split(":", 1)[1].strip()
    try:
        count, frame_time = int(header["frames"]), float(header["frame time"])
    except ValueError:
        raise MotionFormatError(f"{where}: bad MOTION header {header}") from None
    if count == 0:
        raise MotionFormatError(f"the motion file {name} has no frames (Frames: 0); export it with at least one")
    if count < 1 or not (np.isfinite(frame_time) and frame_time > 0):
        raise MotionFormatError(
            f"{where}: needs at least one frame and a positive Frame Time, got "
            f"Frames: {count}, Frame Time: {frame_time}"
        )
    if count > most:
        raise MotionFormatError(
            f"{where}: the header says {count} frames, more than the file could hold "
            f"(at most {most}): it is truncated or the header is wrong"
        )
    return count, frame_time


def _read_frames(
    lines: Iterator[tuple[int, str]], frames: np.ndarray, count: int, num_channels: int, where: str
) -> np.ndarray:
    """The values (K, C) of frames ``frames`` (sorted, below ``count``), reading frame lines up
    to the last of them; frames in between are skipped unparsed."""
    values = np.empty((len(frames), num_channels))
    row, read = 0, 0
    for i, (n, line) in enumerate(lines):
        if i == count:  # the last frame was kept: nothing may follow it
            extra = 1 + sum(1 for _ in lines)
            raise MotionFormatError(f"{where}: the header says {count} frames but {count + extra} frame lines follow")
        read = i + 1
        if row < len(frames) and frames[row] == i:
            message = f"{where}, line {n} (frame {i}): the hierarchy declares {num_channels} channels"
            values[row] = _floats(line.split(), num_channels, message)
            row += 1
            if row == len(frames) and i < count - 1:
                break  # the frames after the last one kept are not read at all
    if row < len(frames):
        raise MotionFormatError(
            f"{where}: the header says {count} frames but {read} frame lines follow (the file is truncated)"
        )
    check_finite(values, f"{where}: MOTION data", frames)
    return values


def _axis_rotations(axis: int, radians: torch.Tensor) -> torch.Tensor:
    """Rotations (T, 3, 3) by ``radians`` (T,) about coordinate axis 0, 1 or 2."""
    rotvec = torch.zeros(radians.shape[0], 3, dtype=radians.dtype)
    rotvec[:, axis] = radians
    return roma.rotvec_to_rotmat(rotvec)


def forward_kinematics(bvh: Bvh, rest: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """World rotations (T, N, 3, 3) and positions (T, N, 3) of every joint, float64, file axes.

    ``rest=True``: the rest skeleton instead (zero rotations, OFFSETs only; T = 1).
    """
    values = torch.from_numpy(np.zeros((1, bvh.values.shape[1])) if rest else bvh.values)
    frames = values.shape[0]
    rotations: list[torch.Tensor] = []
    positions: list[torch.Tensor] = []
    column = 0
    for joint in bvh.joints:
        rotation = torch.eye(3, dtype=torch.float64).expand(frames, 3, 3)
        translation = torch.from_numpy(joint.offset).expand(frames, 3).clone()
        for channel in joint.channels:
            axis = "xyz".index(channel[0])
            if channel.endswith("position"):
                if not rest:
                    translation[:, axis] = values[:, column]
            else:
                rotation = rotation @ _axis_rotations(axis, torch.deg2rad(values[:, column]))
            column += 1
        if joint.parent >= 0:
            parent_rotation, parent_position = rotations[joint.parent], positions[joint.parent]
            translation = parent_position + (parent_rotation @ translation[..., None])[..., 0]
            rotation = parent_rotation @ rotation
        rotations.append(rotation)
        positions.append(translation)
    return torch.stack(rotations, 1), torch.stack(positions, 1)


def map_joints(bvh: Bvh, extra_names: dict[str, list[str]] | None = None) -> dict[str, int]:
    """SMPL-X joint name -> BVH joint index, by the name table and the spine rule (``names.py``).

    The pelvis falls back to the BVH root when no joint is named like one.
    """
    found = match_names(bvh.names, extra_names)
    if "pelvis" not in found and 0 not in found.values():
        found["pelvis"] = 0
    used = set(found.values())
    spine = assign_spine(bvh.parents, found)
    found |= {j: i for j, i in spine.items() if j not in found and i not in used}
    return found


def _normalised(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def _angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle (radians) between directions a and b (3,)."""
    return float(torch.atan2(torch.linalg.cross(a, b).norm(), (a * b).sum()))


def _snap(v: torch.Tensor, exclude: int | None = None) -> torch.Tensor:
    """The signed coordinate axis (3,) nearest to v."""
    scores = v.abs().clone()
    if exclude is not None:
        scores[exclude] = -1
    axis = int(scores.argmax())
    out = torch.zeros(3, dtype=v.dtype)
    out[axis] = 1.0 if v[axis] > 0 else -1.0
    return out


def _body_axes(rest: torch.Tensor, mapping: dict[str, int], where: str) -> torch.Tensor:
    """``A`` (3, 3): file axes -> SMPL-X axes, from the rest skeleton ``rest`` (N, 3)."""
    if "pelvis" not in mapping:
        raise MotionFormatError(
            f"{where}: no pelvis / hips joint (the BVH root is taken by "
            f"another joint); pass extra_names={{'pelvis': [...]}}"
        )
    pelvis = rest[mapping["pelvis"]]
    ups = [rest[mapping[j]] - pelvis for j in ("spine1", "spine2", "spine3", "neck", "head") if j in mapping]
    lefts = [
        rest[mapping[f"left_{j}"]] - rest[mapping[f"right_{j}"]]
        for j in ("hip", "shoulder", "collar")
        if f"left_{j}" in mapping and f"right_{j}" in mapping
    ]
    up = next((v for v in ups if v.norm() > 1e-6), None)  # CMU's first spine joint sits on the hips
    left = next((v for v in lefts if v.norm() > 1e-6), None)
    if up is None or left is None:
        raise MotionFormatError(
            f"{where}: cannot tell up and left apart: need a pelvis, a spine / neck / head joint and "
            f"left + right hips or shoulders, found SMPL-X joints {sorted(mapping)}; add the file's "
            "joint names to ram_avatar.motion.names.NAME_TABLE or pass extra_names"
        )
    up, left = _normalised(up), _normalised(left)
    if (up * left).sum().abs() > 0.7:
        raise MotionFormatError(
            f"{where}: the rest skeleton's up (pelvis -> spine) and left (hip to "
            "hip) directions are nearly parallel; cannot orient the file"
        )
    up = _snap(up)
    left = _snap(left, exclude=int(up.abs().argmax()))
    return torch.stack([left, up, torch.linalg.cross(left, up)])  # rows: SMPL-X x, y, z in file axes


def swing(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The smallest rotation (3, 3) taking direction src (3,) onto dst (3,); opposite
    directions turn about the coordinate axis most perpendicular to them."""
    src, dst = _normalised(src), _normalised(dst)
    axis = torch.linalg.cross(src, dst)
    if axis.norm() < 1e-9:
        if (src * dst).sum() > 0:
            return torch.eye(3, dtype=src.dtype)
        axis = torch.eye(3, dtype=src.dtype)[int(src.abs().argmin())]
        return roma.rotvec_to_rotmat(_normalised(axis - (axis * src).sum() * src) * torch.pi)
    angle = torch.atan2(axis.norm(), (src * dst).sum())
    return roma.rotvec_to_rotmat(_normalised(axis) * angle)


def rest_correction(smplx_bone: torch.Tensor, bvh_bone: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """``C`` (3, 3) with ``C @ smplx_bone`` along ``bvh_bone`` (both (3,), SMPL-X axes): the
    parent's correction ``parent`` (3, 3), then the smallest swing that still differs, so a
    chain bent as one piece in the rest pose (an A-pose arm, down to the thumb) gets one
    correction and no spurious twist."""
    return swing(parent @ smplx_bone, bvh_bone) @ parent


def _bones(
    joint: str,
    mapping: dict[str, int],
    rest: torch.Tensor,
    leaving: list[list[torch.Tensor]],
    parents: list[int],
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The rest bone (3,) of SMPL-X ``joint`` in SMPL-X and in the BVH (SMPL-X axes), and
    whether it is a leaf (no mapped joint below it to aim at).

    Args:
        rest: (N, 3) BVH rest joint positions; leaving: per BVH joint, the offsets of its child
            joints and End Sites; parents: BVH parent indices.
    """
    smplx = torch.tensor(reference.REST_POSITIONS, dtype=torch.float64)
    b = mapping[joint]
    child = reference.MAIN_CHILD.get(joint)
    while child is not None and child not in mapping:  # skip SMPL-X joints the file lacks
        child = reference.MAIN_CHILD.get(child)
    if child is not None and (rest[mapping[child]] - rest[b]).norm() > 1e-9:
        return smplx[_INDEX[child]] - smplx[_INDEX[joint]], rest[mapping[child]] - rest[b], False
    if joint in reference.LEAF_DIRECTION:
        smplx_bone = torch.tensor(reference.LEAF_DIRECTION[joint], dtype=torch.float64)
    elif joint in reference.MAIN_CHILD:  # e.g. a wrist whose fingers are not in the file
        smplx_bone = smplx[_INDEX[reference.MAIN_CHILD[joint]]] - smplx[_INDEX[joint]]
    else:  # finger tips: carry on along the finger
        smplx_bone = smplx[_INDEX[joint]] - smplx[PARENTS[_INDEX[joint]]]
    # The BVH side: the longest bone leaving b (to a child joint or an End Site), else the one
    # into b.
    longest = max(leaving[b], key=lambda v: float(v.norm()), default=None)
    if longest is not None and longest.norm() > 1e-9:
        return smplx_bone, longest, True
    incoming = smplx[_INDEX[joint]] - smplx[PARENTS[_INDEX[joint]]]
    return incoming, rest[b] - rest[max(parents[b], 0)], True


def _closest_to_parent(parent_world: torch.Tensor, world: torch.Tensor, candidates: list[torch.Tensor]) -> torch.Tensor:
    """The candidate rest correction (3, 3) that keeps the joint closest to its parent over the
    clip: the smallest mean local rotation angle.

    parent_world: (T, 3, 3) SMPL-X global rotation of the parent; world: (T, 3, 3) the joint's
    BVH world rotation; candidates: (3, 3) corrections.
    """
    relative = parent_world.transpose(-1, -2) @ world  # (T, 3, 3)
    # trace(relative @ c) = 1 + 2 cos(angle of the local rotation)
    costs = [torch.acos((((relative * c.T).sum((-1, -2)) - 1) / 2).clamp(-1, 1)).mean() for c in candidates]
    return candidates[int(torch.stack(costs).argmin())]


def _twisted(correction: torch.Tensor, bvh_bone: torch.Tensor) -> list[torch.Tensor]:
    """``correction`` (3, 3) followed by quarter turns (0, 90, 180, 270 degrees) about the BVH
    bone (3,): corrections that all keep the bone where it is and differ only in twist."""
    axis = _normalised(bvh_bone) * (torch.pi / 2)
    return [roma.rotvec_to_rotmat(axis * k) @ correction for k in range(4)]


def _swings(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The smallest rotations (T, 3, 3) taking directions src (T, 3) onto dst (T, 3); identity
    where either is zero (callers never pass opposite directions)."""
    axis = torch.linalg.cross(src, dst)
    angle = torch.atan2(axis.norm(dim=-1, keepdim=True), (src * dst).sum(-1, keepdim=True))
    return roma.rotvec_to_rotmat(axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12) * angle)


def reach_like_the_file(
    world: torch.Tensor, positions: torch.Tensor, rest: torch.Tensor, mapping: dict[str, int]
) -> torch.Tensor:
    """SMPL-X world rotations with each arm and leg re-aimed by two-bone inverse kinematics, so
    that its end (wrist, ankle) sits where the BVH's does relative to the limb's root (shoulder,
    hip), in units of the limb's length; the middle joint stays in the BVH's bend plane and the
    end joint's rotation is kept (step 4 of the module docstring).

    Args:
        world: (T, 55, 3, 3) SMPL-X global rotations, every bone along its BVH bone.
        positions: (T, N, 3) BVH joint positions; rest: (N, 3) BVH rest positions (SMPL-X axes).
        mapping: SMPL-X joint name -> BVH joint index.
    Returns:
        (T, 55, 3, 3), a copy; limbs with an unmapped joint are left as they are.
    """
    smplx = torch.tensor(reference.REST_POSITIONS, dtype=world.dtype)
    world = world.clone()
    for limb in LIMBS:
        if not all(j in mapping for j in limb):
            continue
        root, middle, end = (_INDEX[j] for j in limb)
        b_root, b_middle, b_end = (mapping[j] for j in limb)
        upper, lower = smplx[middle] - smplx[root], smplx[end] - smplx[middle]
        u, f = upper.norm(), lower.norm()
        file_length = (rest[b_middle] - rest[b_root]).norm() + (rest[b_end] - rest[b_middle]).norm()
        reach = (positions[:, b_end] - positions[:, b_root]) * ((u + f) / file_length)  # (T, 3)
        aim = reach / reach.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        distance = reach.norm(dim=-1, keepdim=True).clamp((u - f).abs() + 1e-9, u + f)
        bent = positions[:, b_middle] - positions[:, b_root]
        bend = bent - (bent * aim).sum(-1, keepdim=True) * aim  # towards the BVH's elbow / knee
        bend = bend / bend.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        along = (u**2 - f**2 + distance**2) / (2 * distance)  # the middle joint, by the law of cosines
        middle_at = along * aim + (u**2 - along**2).clamp_min(0).sqrt() * bend
        world[:, root] = _swings(world[:, root] @ upper, middle_at) @ world[:, root]
        world[:, middle] = _swings(world[:, middle] @ lower, distance * aim - middle_at) @ world[:, middle]
    return world


def retarget(bvh: Bvh, extra_names: dict[str, list[str]] | None = None) -> tuple[SmplxPose, dict[str, str]]:
    """The BVH motion as SMPL-X-layout poses (float32) and the joint map used.

    Returns:
        pose: batch T, SMPL-X world; ``transl`` as described in the module docstring (the
            horizontal position is the file's, scaled; ``canonicalise`` re-centres it).
        joint_map: SMPL-X joint name -> BVH joint name.
    """
    where = f"BVH file {bvh.path}"
    mapping = map_joints(bvh, extra_names)
    _, rest = forward_kinematics(bvh, rest=True)
    A = _body_axes(rest[0], mapping, where)
    rest = rest[0] @ A.T  # (N, 3) SMPL-X axes
    # Bones leaving each joint at rest; End Site offsets are in the joint's frame, which at
    # rest is the file's world frame, so A turns them too.
    leaving = [
        [rest[c] - rest[b] for c, p in enumerate(bvh.parents) if p == b]
        + [A @ torch.from_numpy(e) for e in joint.end_sites]
        for b, joint in enumerate(bvh.joints)
    ]
    rotations, positions = forward_kinematics(bvh)
    rotations = A @ rotations @ A.T  # (T, N, 3, 3)
    positions = positions @ A.T  # (T, N, 3)

    world = [rotations[:, mapping["pelvis"]]]  # A was built around the pelvis: its frame is SMPL-X's
    corrections = {0: torch.eye(3, dtype=torch.float64)}
    for j, name in enumerate(JOINT_NAMES[1:], start=1):
        if name not in mapping:  # stays at rest: the parent's rotation and correction carry on
            world.append(world[PARENTS[j]])
            corrections[j] = corrections[PARENTS[j]]
            continue
        bvh_world = rotations[:, mapping[name]]
        smplx_bone, bvh_bone, leaf = _bones(name, mapping, rest, leaving, bvh.parents)
        correction = rest_correction(smplx_bone, bvh_bone, corrections[PARENTS[j]])
        if leaf:  # aimed along the End Site, or kept as is (a dummy End Site)
            candidates = [correction, torch.eye(3, dtype=correction.dtype)]
            correction = _closest_to_parent(world[PARENTS[j]], bvh_world, candidates)
        elif _angle(corrections[PARENTS[j]] @ smplx_bone, bvh_bone) > _FAR_FROM_REST:
            correction = _closest_to_parent(world[PARENTS[j]], bvh_world, _twisted(correction, bvh_bone))
        corrections[j] = correction
        world.append(bvh_world @ correction)
    world_t = reach_like_the_file(torch.stack(world, 1), positions, rest, mapping)  # (T, 55, 3, 3)
    parents = torch.tensor((0,) + PARENTS[1:])
    local = world_t[:, parents].transpose(-1, -2) @ world_t
    local[:, 0] = world_t[:, 0]
    full = roma.rotmat_to_rotvec(local)

    scale = _scale(rest, mapping, where)
    transl = positions[:, mapping["pelvis"]] * scale
    lowest = positions[..., 1].amin(1) * scale  # (T,) height of the lowest joint
    standing = (transl[:, 1] - lowest).max()
    transl[:, 1] = transl[:, 1] - lowest.min() - standing
    joint_map = {name: bvh.names[i] for name, i in sorted(mapping.items(), key=lambda kv: _INDEX[kv[0]])}
    return SmplxPose.from_full(full.float(), transl.float()), joint_map


def _scale(rest: torch.Tensor, mapping: dict[str, int], where: str) -> float:
    """Metres per file unit: the reference leg (or torso) length over the file's."""
    legs = [
        (rest[mapping[f"{s}_knee"]] - rest[mapping[f"{s}_hip"]]).norm()
        + (rest[mapping[f"{s}_ankle"]] - rest[mapping[f"{s}_knee"]]).norm()
        for s in ("left", "right")
        if all(f"{s}_{j}" in mapping for j in ("hip", "knee", "ankle"))
    ]
    if legs and float(sum(legs)) > 0:
        return reference.LEG_LENGTH / float(sum(legs) / len(legs))
    if "head" in mapping and (rest[mapping["head"]] - rest[mapping["pelvis"]]).norm() > 0:
        return reference.TORSO_LENGTH / float((rest[mapping["head"]] - rest[mapping["pelvis"]]).norm())
    raise MotionFormatError(
        f"{where}: cannot find the skeleton's size (needs hip, knee and ankle "
        "joints, or a head): add its joint names to the name table"
    )


def joint_positions(bvh: Bvh, extra_names: dict[str, list[str]] | None = None) -> torch.Tensor:
    """The file's own forward kinematics (T, N, 3), float64, in SMPL-X axes and scaled to metres as
    :func:`retarget` scales the root motion: what a retargeted motion is compared with."""
    where = f"BVH file {bvh.path}"
    mapping = map_joints(bvh, extra_names)
    _, rest = forward_kinematics(bvh, rest=True)
    A = _body_axes(rest[0], mapping, where)
    return forward_kinematics(bvh)[1] @ A.T * _scale(rest[0] @ A.T, mapping, where)


def load_bvh(
    path: str | Path,
    extra_names: dict[str, list[str]] | None = None,
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    source_fps: float | None = None,
) -> tuple[SmplxPose, float, dict[str, str]]:
    """Read and retarget a BVH file: (poses, frames per second, SMPL-X -> BVH joint names).

    The poses are at ``fps`` (default: the file's rate, or ``source_fps``, which overrides the
    file's), at most ``max_frames`` of them. Only the file's frames those need are read and
    retargeted (see :func:`read_bvh`); the frame rates and the number of frames kept are
    checked against ``ram_avatar.limits`` before any frame is read.
    """
    path = Path(path)

    def plan(count: int, file_fps: float) -> Resampling:
        rate = source_fps or file_fps
        return plan_resampling(count, rate, fps or rate, max_frames, path.name)

    bvh = read_bvh(path, lambda count, file_fps: plan(count, file_fps).sources)
    pose, joint_map = retarget(bvh, extra_names)
    pose = apply_resampling(pose, plan(bvh.frame_count, bvh.fps).among(bvh.frames))
    return pose, float(fps or source_fps or bvh.fps), joint_map
