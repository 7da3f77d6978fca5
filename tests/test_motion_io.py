"""Motion import: BVH parsing and retargeting, AMASS / SMPL-X files, resampling, bad files."""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import roma
import torch

from ram_avatar.body.layout import JOINT_NAMES, NUM_JOINTS, PARENTS, SmplxPose
from ram_avatar.motion import (
    Motion,
    MotionFormatError,
    find_motion_files,
    load_motion,
    reference,
    resample,
    save_motion,
)
from ram_avatar.motion.bvh import forward_kinematics, joint_positions, map_joints, read_bvh

J = {name: i for i, name in enumerate(JOINT_NAMES)}
MOCAP = "mocap"
FAMILIES = {  # file -> (joints in the file, SMPL-X joints it drives)
    "animateddrawings_cmu1_jumping_jacks.bvh": (31, 22),
    "animateddrawings_fair1_dab.bvh": (27, 24),
    "animateddrawings_fair1_jumping.bvh": (27, 24),
    "animateddrawings_fair1_wave_hello.bvh": (27, 24),
    "animateddrawings_fair1_zombie.bvh": (27, 24),
    "animateddrawings_rokoko_jesse_dance.bvh": (60, 52),
}
BODY_JOINTS = JOINT_NAMES[:22]


# ----------------------------------------------------------------------------- helpers


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle (degrees) between axis-angle rotations a and b (..., 3)."""
    relative = roma.rotvec_to_rotmat(a.double()).transpose(-1, -2) @ roma.rotvec_to_rotmat(b.double())
    return torch.rad2deg(roma.rotmat_to_rotvec(relative).norm(dim=-1))


def world_rotations(full: torch.Tensor) -> torch.Tensor:
    """SMPL-X global joint rotations (T, 55, 3, 3) from local axis-angle (T, 55, 3)."""
    local = roma.rotvec_to_rotmat(full.double())
    world = [local[:, 0]]
    for j in range(1, NUM_JOINTS):
        world.append(world[PARENTS[j]] @ local[:, j])
    return torch.stack(world, 1)


def random_pose(frames: int, seed: int = 0) -> SmplxPose:
    """Moderate random poses: every body and finger joint moves; jaw and eyes stay (BVH rigs
    have none); the root turns mostly about +Y and walks."""
    g = torch.Generator().manual_seed(seed)
    full = 0.35 * torch.randn(frames, NUM_JOINTS, 3, generator=g)
    full[:, 25:] *= 0.5
    full[:, 22:25] = 0
    full[:, 0] = torch.tensor([0.1, 0.6, -0.1]) * torch.randn(frames, 3, generator=g)
    transl = torch.cumsum(0.02 * torch.randn(frames, 3, generator=g), 0)
    return SmplxPose.from_full(full, transl)


def _bvh_name(joint: str) -> str:
    """Mixamo-style name of a SMPL-X joint."""
    centre = {
        "pelvis": "Hips",
        "spine1": "Spine",
        "spine2": "Spine1",
        "spine3": "Spine2",
        "neck": "Neck",
        "head": "Head",
    }
    if joint in centre:
        return centre[joint]
    side, part = joint.split("_", 1)
    limbs = {
        "hip": "UpLeg",
        "knee": "Leg",
        "ankle": "Foot",
        "foot": "ToeBase",
        "collar": "Shoulder",
        "shoulder": "Arm",
        "elbow": "ForeArm",
        "wrist": "Hand",
    }
    return side.capitalize() + (limbs.get(part) or "Hand" + part[:-1].capitalize() + part[-1])


def _subtree(root: str) -> set[int]:
    out = {J[root]}
    for j in range(NUM_JOINTS):
        if PARENTS[j] in out:
            out.add(j)
    return out


def write_synthetic_bvh(
    path: Path,
    pose: SmplxPose,
    units: float,
    axes: torch.Tensor,
    arm_drop_deg: float,
    bind: torch.Tensor | None = None,
) -> None:
    """A BVH of a SMPL-X-like rig (Mixamo names, jaw and eyes left out) performing ``pose``.

    Its rest pose is the reference T-pose with both arms (down to the finger tips) lowered by
    ``arm_drop_deg`` about the shoulders; ``axes`` (3, 3) turns SMPL-X axes into the file's and
    lengths are in ``units`` per metre. Channel orders cycle through four permutations.
    ``bind`` (55, 3, 3): the joint frames in that rest pose, which the channels then carry
    (rigs like Rokoko's: at zero rotation every bone lies along its joint's +X); identity by
    default (the rest pose is the zero rotation, as in CMU files). The pelvis keeps identity.
    """
    rest = torch.tensor(reference.REST_POSITIONS, dtype=torch.float64)
    correction = torch.eye(3, dtype=torch.float64).repeat(NUM_JOINTS, 1, 1)
    for side, sign in (("left", -1.0), ("right", 1.0)):
        drop = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.0, sign * math.radians(arm_drop_deg)]).double())
        shoulder = J[f"{side}_shoulder"]
        for j in _subtree(f"{side}_shoulder"):
            rest[j] = rest[shoulder] + drop @ (rest[j] - rest[shoulder])
            correction[j] = drop  # this joint's rest bone is the T-pose bone turned by `drop`
    frames = torch.eye(3, dtype=torch.float64).repeat(NUM_JOINTS, 1, 1) if bind is None else bind.double()
    correction = frames.transpose(-1, -2) @ correction  # zero rotation: every bone in its own frame
    joints = [j for j in range(NUM_JOINTS) if JOINT_NAMES[j] not in ("jaw", "left_eye", "right_eye")]
    children = {j: [c for c in joints if PARENTS[c] == j and c != 0] for j in joints}

    def end_site(j: int) -> torch.Tensor:
        name = JOINT_NAMES[j]
        if name in reference.LEAF_DIRECTION:
            return 0.08 * torch.tensor(reference.LEAF_DIRECTION[name], dtype=torch.float64)
        return 0.8 * (rest[j] - rest[PARENTS[j]])  # finger tips carry on along the finger

    # Motion: the BVH joint's world rotation is G = Q C^T (Q: SMPL-X global, C: rest correction).
    Q = world_rotations(pose.full())
    G = axes @ Q @ correction.transpose(-1, -2) @ axes.T  # (T, 55, 3, 3) in file axes
    orders = ["ZXY", "XYZ", "YZX", "ZYX"]
    lines, columns = ["HIERARCHY"], []

    def write(j: int, depth: int) -> None:
        pad = "  " * depth
        offset = units * axes @ frames[PARENTS[j]].T @ (rest[j] - (rest[PARENTS[j]] if j else rest[j]))
        order = orders[j % 4]
        lines.append(f"{pad}{'ROOT' if j == 0 else 'JOINT'} {_bvh_name(JOINT_NAMES[j])}")
        lines.append(pad + "{")
        lines.append(f"{pad}  OFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}")
        position = "Xposition Yposition Zposition " if j == 0 else ""
        rotations = " ".join(f"{a}rotation" for a in order)
        lines.append(f"{pad}  CHANNELS {6 if j == 0 else 3} {position}{rotations}")
        local = G[:, j] if j == 0 else G[:, PARENTS[j]].transpose(-1, -2) @ G[:, j]
        if j == 0:
            columns.append(units * (pose.transl.double() + rest[0]) @ axes.T)
        columns.append(roma.rotmat_to_euler(order, local, degrees=True))
        for c in children[j]:
            write(c, depth + 1)
        if not children[j]:
            tip = units * axes @ frames[j].T @ end_site(j)
            site = f"{pad}    OFFSET {tip[0]:.6f} {tip[1]:.6f} {tip[2]:.6f}"
            lines.extend([f"{pad}  End Site", pad + "  {", site, pad + "  }"])
        lines.append(pad + "}")

    write(0, 0)
    values = torch.cat(columns, 1).numpy()
    lines += ["MOTION", f"Frames: {len(values)}", "Frame Time: 0.033333"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")


Y_UP = torch.eye(3, dtype=torch.float64)
Z_UP = torch.tensor([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]], dtype=torch.float64)  # +Y -> +Z, +Z -> -Y


@pytest.fixture(scope="module")
def synthetic_bvh(tmp_path_factory) -> tuple[Path, SmplxPose]:
    pose = random_pose(24)
    path = tmp_path_factory.mktemp("bvh") / "apose_cm.bvh"
    write_synthetic_bvh(path, pose, units=100.0, axes=Y_UP, arm_drop_deg=45.0)
    return path, pose


@functools.cache
def load_shared(path: Path) -> Motion:
    """A shared mocap file, loaded once for all the tests that read it."""
    return load_motion(path)


# ----------------------------------------------------------------------------- BVH


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_shared_bvh_loads_upright_and_facing_the_camera(shared_data, name):
    path = shared_data / MOCAP / name
    bvh = read_bvh(path)
    num_joints, num_mapped = FAMILIES[name]
    assert len(bvh.joints) == num_joints
    motion = load_shared(path)
    assert motion.num_frames == bvh.values.shape[0]
    assert motion.fps in (30.0, 100.0, 120.0)  # Frame Time .03333 etc. snaps to the whole rate
    assert len(motion.joint_map) == num_mapped
    assert all(j in motion.joint_map for j in BODY_JOINTS)  # all three families drive the whole body
    full = motion.pose.full()
    assert torch.isfinite(full).all() and torch.isfinite(motion.pose.transl).all()
    root = roma.rotvec_to_rotmat(motion.pose.global_orient)
    assert root[0, 1, 1] > 0.85, "first frame upright"
    assert abs(root[0, 0, 2]) < 1e-5 and root[0, 2, 2] > 0.85, "first frame faces +Z"
    assert root[:, 1, 1].mean() > 0.7, "upright on average"
    assert motion.pose.transl[0, [0, 2]].abs().max() < 1e-5, "starts at the horizontal origin"
    assert motion.pose.transl[:, 1].abs().max() < 0.8, "height in metres, measured from standing"


def test_rokoko_fingers_are_mapped_and_move_the_hand(shared_data):
    motion = load_shared(shared_data / MOCAP / "animateddrawings_rokoko_jesse_dance.bvh")
    assert motion.joint_map["left_index1"] == "LeftHandIndex1"
    assert motion.joint_map["right_thumb3"] == "RightHandThumb3"
    # Relaxed, curled fingers: the middle finger's joints bend (about +-Z, SMPL-X's curl axis).
    middle = motion.pose.left_hand_pose[:, 3:6]
    assert middle.norm(dim=-1).mean() > math.radians(10)
    assert (middle[..., 2].abs() > middle[..., :2].abs().max(-1).values).float().mean() > 0.9
    # Curled, not bent backwards: the left hand curls about -Z, the right (mirrored) about +Z.
    assert (middle[..., 2] < 0).float().mean() > 0.9
    assert (motion.pose.right_hand_pose[:, 3:6, 2] > 0).float().mean() > 0.9
    # Collars and ankles stay near their parents (a twist off by 180 / 90 degrees, from the
    # rig's all-bones-along-+X rest pose, put them 170 / 90 degrees away in every frame).
    for joint in ("left_collar", "right_collar", "left_ankle", "right_ankle"):
        assert motion.pose.full()[:, J[joint]].norm(dim=-1).mean() < math.radians(30), joint
    # Its head End Site is a dummy (+X, sideways): the head must still sit upright on the neck.
    assert motion.pose.full()[:, J["head"]].norm(dim=-1).mean() < math.radians(30)


# SMPL-X hinge joints at its T-pose: knees flex about +X, the left elbow about -Y, the right about +Y.
FLEXION = {"left_knee": (0, 1.0), "right_knee": (0, 1.0), "left_elbow": (1, -1.0), "right_elbow": (1, 1.0)}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_shared_bvh_bends_elbows_and_knees_the_anatomical_way(shared_data, name):
    # A limb retargeted with its twist off by 180 degrees bends backwards (Rokoko's right arm
    # did). Mocap hyperextends a little when a limb is straight, so only clearly bent frames
    # (> 20 degrees) count, and most of them must bend the right way.
    full = load_shared(shared_data / MOCAP / name).pose.full()
    for joint, (axis, sign) in FLEXION.items():
        rotvec = full[:, J[joint]]
        bent = rotvec.norm(dim=-1) > math.radians(20)
        if bent.sum() < 10:  # e.g. the knees while waving hello
            continue
        right_way = (sign * rotvec[bent, axis] > 0).float().mean()
        assert right_way > 0.9, f"{joint} bends the anatomical way in only {right_way:.0%} of bent frames"


@pytest.mark.parametrize(
    "units, axes, drop",
    [(100.0, Y_UP, 45.0), (1.0, Z_UP, 45.0), (39.37, Y_UP, 90.0)],
    ids=["yup-cm-apose", "zup-m-apose", "yup-inch-armsdown"],
)
def test_retarget_round_trip_from_a_non_t_rest_pose(tmp_path, units, axes, drop):
    pose = random_pose(24, seed=1)
    path = tmp_path / "synthetic.bvh"
    write_synthetic_bvh(path, pose, units=units, axes=axes, arm_drop_deg=drop)
    motion = load_motion(path, canonical=False)
    assert len(motion.joint_map) == NUM_JOINTS - 3  # everything but jaw and eyes
    error = angle_deg(motion.pose.full(), pose.full())  # (T, 55)
    worst = JOINT_NAMES[int(error.max(0).values.argmax())]
    assert error.max() < 0.1, f"worst joint {worst}: {error.max():.3f} deg"
    # Root motion comes back in metres; the height is relative (measured from standing).
    got, want = motion.pose.transl, pose.transl
    torch.testing.assert_close(got[:, [0, 2]], want[:, [0, 2]], atol=1e-4, rtol=0)
    torch.testing.assert_close(got[:, 1] - got[0, 1], want[:, 1] - want[0, 1], atol=1e-4, rtol=0)


def bones_along_x() -> torch.Tensor:
    """Rokoko-style bind frames (55, 3, 3) for the reference T-pose: each joint's +X runs along
    its bone (snapped to the nearest axis) and the right arm's frames are the left's turned 180
    degrees about +Y, as mirrored rigs have them; the pelvis keeps the world frame."""
    rest = torch.tensor(reference.REST_POSITIONS, dtype=torch.float64)
    frames = torch.eye(3, dtype=torch.float64).repeat(NUM_JOINTS, 1, 1)
    right_arm = _subtree("right_collar")
    for j in sorted(set(range(1, NUM_JOINTS)) - right_arm):
        name = JOINT_NAMES[j]
        if name in reference.MAIN_CHILD:
            bone = rest[J[reference.MAIN_CHILD[name]]] - rest[j]
        elif name in reference.LEAF_DIRECTION:
            bone = torch.tensor(reference.LEAF_DIRECTION[name], dtype=torch.float64)
        else:  # finger tips
            bone = rest[j] - rest[PARENTS[j]]
        x = torch.zeros(3, dtype=torch.float64)
        x[bone.abs().argmax()] = bone[bone.abs().argmax()].sign()
        up = torch.tensor([0.0, 1.0, 0.0] if x[2] else [0.0, 0.0, 1.0], dtype=torch.float64)
        frames[j] = torch.stack([x, up, torch.linalg.cross(x, up)], 1)
    flip = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))  # 180 degrees about +Y
    for j in right_arm:
        frames[j] = flip @ frames[J[JOINT_NAMES[j].replace("right_", "left_")]]
    return frames


def test_rig_with_its_bind_pose_in_the_channels(tmp_path):
    # At zero rotation such a rig is every bone along +X: the rest skeleton gives the bones
    # but not their twist, which must come out right anyway (the right arm bent backwards and
    # the feet rolled 90 degrees when the twist came from the rest swings alone).
    pose = random_pose(24, seed=2)
    path = tmp_path / "along_x.bvh"
    write_synthetic_bvh(path, pose, units=100.0, axes=Y_UP, arm_drop_deg=0.0, bind=bones_along_x())
    error = angle_deg(load_motion(path, canonical=False).pose.full(), pose.full()).max(0).values  # (55,)
    # Not exact: SMPL-X bones are not axis-aligned (the collar rises 8 degrees), so the quarter
    # turn picked leaves a few degrees of twist.
    assert error[:22].max() < 25, f"worst body joint {JOINT_NAMES[int(error[:22].argmax())]}"
    hinges = [J[f"{side}_{joint}"] for side in ("left", "right") for joint in ("elbow", "knee")]
    assert error[hinges].max() < 10, {JOINT_NAMES[j]: round(float(error[j]), 1) for j in hinges}


def test_canonical_turns_only_the_root(synthetic_bvh):
    path, _ = synthetic_bvh
    raw, canonical = load_motion(path, canonical=False), load_motion(path)
    torch.testing.assert_close(canonical.pose.full()[:, 1:], raw.pose.full()[:, 1:])
    forward = roma.rotvec_to_rotmat(canonical.pose.global_orient[0])[:, 2]
    assert abs(float(forward[0])) < 1e-5 and float(forward[2]) > 0
    # The path keeps its shape: distances between frames are unchanged.
    torch.testing.assert_close(
        torch.cdist(canonical.pose.transl, canonical.pose.transl),
        torch.cdist(raw.pose.transl, raw.pose.transl),
        atol=1e-5,
        rtol=0,
    )


def test_unmapped_intermediate_joints_fold_into_the_next_mapped_joint(tmp_path, synthetic_bvh):
    # Put a CMU-style LHipJoint (zero offset, unknown to the name table) between the hips and
    # the left thigh, turned 30 degrees: the whole left leg turns with it, so the SMPL-X hip
    # must carry that turn and everything below it keep its local rotation.
    path, _ = synthetic_bvh
    text = path.read_text().splitlines()
    start = text.index(next(line for line in text if line.strip() == "JOINT LeftUpLeg"))
    end = _block_end(text, start)
    pad = text[start][: len(text[start]) - len(text[start].lstrip())]
    inserted = [
        f"{pad}JOINT LHipJoint",
        pad + "{",
        f"{pad}  OFFSET 0 0 0",
        f"{pad}  CHANNELS 3 Zrotation Yrotation Xrotation",
    ]
    thigh = ["  " + line for line in text[start : end + 1]]
    lines = text[:start] + inserted + thigh + [pad + "}"] + text[end + 1 :]
    first = sum(int(line.split()[1]) for line in text[:start] if line.strip().startswith("CHANNELS"))
    motion_at = lines.index("MOTION")
    rows = [line.split() for line in lines[motion_at + 3 :]]
    lines[motion_at + 3 :] = [" ".join(row[:first] + ["30", "0", "0"] + row[first:]) for row in rows]
    (tmp_path / "hipjoint.bvh").write_text("\n".join(lines) + "\n")

    base, moved = load_motion(path, canonical=False), load_motion(tmp_path / "hipjoint.bvh", canonical=False)
    assert "LHipJoint" not in moved.joint_map.values()
    Wb, Wm = world_rotations(base.pose.full()), world_rotations(moved.pose.full())
    turn = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.0, math.radians(30.0)], dtype=torch.float64))
    leg = [J["left_hip"], J["left_knee"], J["left_foot"]]
    expected = Wb[:, :1] @ turn @ Wb[:, :1].transpose(-1, -2) @ Wb[:, leg]
    error = roma.rotmat_to_rotvec(expected.transpose(-1, -2) @ Wm[:, leg])
    assert torch.rad2deg(error.norm(dim=-1)).max() < 0.1
    torch.testing.assert_close(moved.pose.body_pose[:, 1:], base.pose.body_pose[:, 1:], atol=1e-4, rtol=0)


def test_position_channels_on_any_joint(tmp_path, synthetic_bvh):
    # Exporters may give any joint position channels: they must be read (and counted) correctly.
    path, _ = synthetic_bvh
    text = path.read_text().splitlines()
    start = text.index(next(line for line in text if line.strip() == "JOINT Spine"))
    offset = text[start + 2].split()[1:]
    first = sum(int(line.split()[1]) for line in text[: start + 3] if line.strip().startswith("CHANNELS"))
    text[start + 3] = text[start + 3].replace("CHANNELS 3 ", "CHANNELS 6 Xposition Yposition Zposition ")
    motion_at = text.index("MOTION")
    rows = [line.split() for line in text[motion_at + 3 :]]
    text[motion_at + 3 :] = [" ".join(row[:first] + offset + row[first:]) for row in rows]
    (tmp_path / "positions.bvh").write_text("\n".join(text) + "\n")
    base, with_positions = load_motion(path), load_motion(tmp_path / "positions.bvh")
    torch.testing.assert_close(with_positions.pose.full(), base.pose.full(), atol=1e-5, rtol=0)
    torch.testing.assert_close(with_positions.pose.transl, base.pose.transl, atol=1e-5, rtol=0)


def _block_end(lines: list[str], start: int) -> int:
    depth = 0
    for i in range(start + 1, len(lines)):
        depth += lines[i].count("{") - lines[i].count("}")
        if depth == 0:
            return i
    raise AssertionError("unbalanced test BVH")


@pytest.mark.parametrize(
    "name", ["Left_UpLeg", "mixamorig:LeftUpLeg", "leftupleg", "UpLeg_L", "Bip01 L Thigh", "thigh_l"]
)
def test_joint_names_match_across_conventions(name):
    from ram_avatar.motion.names import match_names

    assert match_names(["Hips", name])["left_hip"] == 1


def test_cmu_shoulder_is_the_upper_arm_but_mixamo_shoulder_is_the_collar():
    from ram_avatar.motion.names import match_names

    cmu = match_names(["Hips", "LeftCollar", "LeftShoulder", "LeftElbow", "LeftWrist"])
    mixamo = match_names(["Hips", "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand"])
    assert (cmu["left_collar"], cmu["left_shoulder"]) == (1, 2)
    assert (mixamo["left_collar"], mixamo["left_shoulder"]) == (1, 2)
    assert match_names(["Hips", "Spine"], extra_names={"left_hip": ["Spine"]})["left_hip"] == 1


def test_jumping_jacks_raise_the_hands_above_the_head(shared_data, anny_template):
    path = shared_data / MOCAP / "animateddrawings_cmu1_jumping_jacks.bvh"
    motion = load_motion(path)
    with torch.no_grad():
        joints = anny_template(motion.pose).joints  # (T, 55, 3)
    wrists = joints[:, [J["left_wrist"], J["right_wrist"]], 1].min(1).values
    head = joints[:, J["head"], 1]
    up = int((wrists - head).argmax())
    assert (wrists[up] - head[up]) > 0.1, "both hands well above the head at the top of a jump"
    arms_down = joints[0, [J["left_wrist"], J["right_wrist"]], 1].max() < joints[0, J["spine3"], 1]
    assert arms_down, "arms down at the start"
    # Facing the camera: the body's left on +X, the eyes in front of the head.
    assert (joints[:, J["left_hip"], 0] > joints[:, J["right_hip"], 0]).all()
    assert (joints[:, J["left_eye"], 2] > joints[:, J["head"], 2]).float().mean() > 0.9
    # The feet leave the ground: the lowest point of the body rises during the jumps.
    lowest = joints[..., 1].amin(1)  # the template adds transl
    assert float(lowest.max() - lowest.min()) > 0.05


def _rotation(*axis_degrees: tuple[int, float]) -> torch.Tensor:
    """Axis-angle (3,) of the product of rotations about coordinate axes, e.g. ``(2, 25), (0, -90)``."""
    matrix = torch.eye(3, dtype=torch.float64)
    for axis, degrees in axis_degrees:
        rotvec = torch.zeros(3, dtype=torch.float64)
        rotvec[axis] = math.radians(degrees)
        matrix = matrix @ roma.rotvec_to_rotmat(rotvec)
    return roma.rotmat_to_rotvec(matrix).float()


# A wave (the upper arm 25 degrees below the horizontal, twisted so that the elbow's 100 degree
# flexion lifts the forearm) and a raised knee, each in a rig whose two bones have other
# proportions than SMPL-X's: AnimatedDrawings' forearm is 12 % longer than its upper arm, its
# thigh 30 % longer than its shin.
LIMB_POSES = {
    "arm": (
        ("right_shoulder", "right_elbow", "right_wrist"),
        ("RightForeArm", "RightHand"),
        (0.9, 1.15),
        {"right_shoulder": _rotation((2, 25.0), (0, -90.0)), "right_elbow": _rotation((1, 100.0))},
    ),
    "leg": (
        ("left_hip", "left_knee", "left_ankle"),
        ("LeftLeg", "LeftFoot"),
        (1.15, 0.9),
        {"left_hip": _rotation((0, -70.0)), "left_knee": _rotation((0, 90.0))},
    ),
}


@pytest.mark.parametrize("limb", sorted(LIMB_POSES))
def test_limbs_reach_where_the_file_puts_them_whatever_its_proportions(tmp_path, anny_template, limb):
    (root, middle, end), (middle_name, end_name), (upper_scale, lower_scale), rotations = LIMB_POSES[limb]
    full = torch.zeros(3, NUM_JOINTS, 3)
    for joint, rotvec in rotations.items():
        full[:, J[joint]] = rotvec * torch.tensor([[0.6], [1.0], [1.2]])  # three frames, bending further
    pose = SmplxPose.from_full(full, torch.zeros(3, 3))
    path = tmp_path / f"{limb}.bvh"
    write_synthetic_bvh(path, pose, units=100.0, axes=Y_UP, arm_drop_deg=0.0)
    lines = path.read_text().splitlines()
    for name, scale in ((middle_name, upper_scale), (end_name, lower_scale)):  # the bone into each joint
        at = lines.index(next(line for line in lines if line.strip() == f"JOINT {name}")) + 2
        indent, offset = lines[at].split("OFFSET")
        lines[at] = f"{indent}OFFSET " + " ".join(f"{scale * float(v):.6f}" for v in offset.split())
    path.write_text("\n".join(lines) + "\n")

    bvh = read_bvh(path)
    _, positions = forward_kinematics(bvh)  # (3, N, 3), centimetres, Y up like SMPL-X
    index = {name: bvh.names.index(_bvh_name(name)) for name in (root, middle, end)}
    file_length = sum(float(torch.from_numpy(bvh.joints[index[j]].offset).norm()) for j in (middle, end))
    file_reach = (positions[:, index[end]] - positions[:, index[root]]) / file_length
    motion = load_motion(path, canonical=False)
    with torch.no_grad():
        joints = anny_template(motion.pose).joints.double()  # (3, 55, 3)
    rest = joints[0]  # the first frame's bones have their rest lengths too
    length = float((rest[J[middle]] - rest[J[root]]).norm() + (rest[J[end]] - rest[J[middle]]).norm())
    reach = (joints[:, J[end]] - joints[:, J[root]]) / length
    # The end where the file has it, in limb lengths: within 5 mm on a 0.48 m arm / 0.8 m leg
    # (bone directions alone missed by 5 cm on the arm, 8 cm on the leg).
    assert (reach - file_reach).norm(dim=-1).max() * length < 0.005, (reach, file_reach)
    # The hand / foot keeps its orientation, and the elbow / knee bends in the file's plane.
    world, want = world_rotations(motion.pose.full()), world_rotations(pose.full())
    turn = roma.rotmat_to_rotvec(want[:, J[end]].transpose(-1, -2) @ world[:, J[end]]).norm(dim=-1)
    assert torch.rad2deg(turn).max() < 0.1
    normal = torch.linalg.cross(positions[:, index[middle]] - positions[:, index[root]], file_reach)
    normal = normal / normal.norm(dim=-1, keepdim=True)
    off_plane = ((joints[:, J[middle]] - joints[:, J[root]]) * normal).sum(-1)
    assert off_plane.abs().max() < 1e-3


def test_the_bundled_wave_raises_the_hand_where_the_file_does(anny_template):
    # The README's example: the BVH's own forward kinematics lifts the right wrist above the right
    # shoulder in 18 of its 210 frames at 30 fps (up to 0.12 arm lengths, 6 cm); retargeted onto
    # the template it must do so in the same frames, as high (bone directions alone reached
    # half as high, in 9 frames).
    path = Path(__file__).resolve().parents[1] / "examples" / "motions" / "wave_hello.bvh"
    bvh = read_bvh(path)
    mapping = map_joints(bvh)
    positions = joint_positions(bvh)[::4]  # 120 fps -> 30
    with torch.no_grad():
        joints = anny_template(load_motion(path, fps=30).pose).joints.double()

    def wrist_height(points: torch.Tensor, arm: list[int]) -> tuple[torch.Tensor, float]:
        """Wrist above shoulder (T,) in arm lengths, and the arm's length (shoulder, elbow, wrist: ``arm``)."""
        shoulder, elbow, wrist = (points[:, i] for i in arm)
        length = float((elbow[0] - shoulder[0]).norm() + (wrist[0] - elbow[0]).norm())
        return (wrist[:, 1] - shoulder[:, 1]) / length, length

    file_height, _ = wrist_height(positions, [mapping[f"right_{j}"] for j in ("shoulder", "elbow", "wrist")])
    height, length = wrist_height(joints, [J[f"right_{j}"] for j in ("shoulder", "elbow", "wrist")])
    assert len(height) == len(file_height) == 210
    assert torch.equal(height > 0, file_height > 0) and (height > 0).sum() >= 0.05 * len(height)
    assert (height - file_height).abs().max() * length < 0.01  # within 1 cm, at every frame
    assert height.max() * length > 0.05


# ----------------------------------------------------------------------------- resampling


def test_resampling_keeps_duration_and_interpolates_rotations():
    frames, fps = 31, 30.0
    angle = torch.linspace(0, 1.5, frames)  # the elbow bends at constant speed
    full = torch.zeros(frames, NUM_JOINTS, 3)
    full[:, J["left_elbow"], 1] = -angle
    transl = torch.stack([torch.linspace(0, 1, frames), torch.zeros(frames), torch.zeros(frames)], 1)
    motion = Motion(SmplxPose.from_full(full, transl), fps, "test", "memory")
    for new_fps in (24.0, 60.0, 100.0, 7.5):
        out = motion.resample(new_fps)
        assert abs(out.duration - motion.duration) < 1 / new_fps
        t = torch.arange(out.num_frames) / new_fps
        torch.testing.assert_close(out.pose.full()[:, J["left_elbow"], 1], -1.5 * t, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.pose.transl[:, 0], t, atol=1e-5, rtol=0)
    assert resample(motion.pose, fps, fps).batch_size == frames


def test_load_motion_resamples_to_the_requested_fps(synthetic_bvh):
    path, _ = synthetic_bvh
    native, resampled = load_motion(path), load_motion(path, fps=60)
    assert native.fps == 30 and resampled.fps == 60
    assert resampled.num_frames == 2 * native.num_frames - 1
    torch.testing.assert_close(resampled.pose.full()[::2], native.pose.full(), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- SMPL-family files


def to_axes(pose: SmplxPose, rotation: torch.Tensor) -> SmplxPose:
    """The same motion written in other world axes (rotation: SMPL-X -> file axes)."""
    R = rotation.float()
    orient = roma.rotmat_to_rotvec(R @ roma.rotvec_to_rotmat(pose.global_orient))
    return SmplxPose.from_full(torch.cat([orient[:, None], pose.full()[:, 1:]], 1), pose.transl @ R.T)


@pytest.mark.parametrize("layout", [156, 165])
def test_amass_round_trip(tmp_path, layout):
    pose = random_pose(20, seed=2)  # jaw and eyes at rest: SMPL-H has none
    zup = to_axes(pose, Z_UP)  # AMASS is Z-up
    full = zup.full().reshape(20, -1).numpy()
    poses = np.concatenate([full[:, :66], full[:, 75:]], 1) if layout == 156 else full
    path = tmp_path / "amass.npz"
    np.savez(
        path,
        poses=poses,
        trans=zup.transl.numpy(),
        betas=np.zeros(16),
        mocap_framerate=np.array(120.0),
        gender=np.array("neutral"),
    )
    motion = load_motion(path, canonical=False)
    assert motion.fps == 120.0 and motion.num_frames == 20
    assert angle_deg(motion.pose.full(), pose.full()).max() < 0.01
    torch.testing.assert_close(motion.pose.transl, pose.transl, atol=1e-5, rtol=0)


def test_smplx_parameter_npz_and_json_round_trip(tmp_path):
    pose = random_pose(12, seed=3)
    flat = {k: v.reshape(12, -1) for k, v in pose.to_numpy().items()}  # (T, n*3) like smplx writes
    np.savez(tmp_path / "params.npz", **flat, fps=np.array(25.0))
    (tmp_path / "params.json").write_text(json.dumps({k: v.tolist() for k, v in flat.items()} | {"fps": 25}))
    frames = [{k: v[i].tolist() for k, v in flat.items()} for i in range(12)]
    (tmp_path / "frames.json").write_text(json.dumps(frames))
    for name in ("params.npz", "params.json", "frames.json"):
        source_fps = 25.0 if name == "frames.json" else None  # per-frame objects carry no fps
        motion = load_motion(tmp_path / name, canonical=False, source_fps=source_fps)
        assert motion.fps == 25.0
        assert angle_deg(motion.pose.full(), pose.full()).max() < 0.01, name
        torch.testing.assert_close(motion.pose.transl, pose.transl, atol=1e-5, rtol=0)


def test_camera_frame_parameters_are_turned_upright(tmp_path):
    pose = random_pose(10, seed=4)
    camera = to_axes(pose, torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)))  # OpenCV axes
    np.savez(tmp_path / "smplerx.npz", **camera.to_numpy())
    motion = load_motion(tmp_path / "smplerx.npz", source_fps=30, canonical=False)
    assert angle_deg(motion.pose.full(), pose.full()).max() < 0.01


def test_save_and_load_motion_round_trip_exactly(tmp_path, synthetic_bvh):
    path, _ = synthetic_bvh
    motion = load_motion(path)
    out = save_motion(motion, tmp_path / "deep" / "clip.npz")
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.npz"]  # no temporary left behind
    back = load_motion(out)
    assert (back.fps, back.name, back.joint_map) == (motion.fps, motion.name, motion.joint_map)
    for key, value in motion.pose.to_numpy().items():
        np.testing.assert_array_equal(back.pose.to_numpy()[key], value)
    with np.load(out, allow_pickle=False) as data:  # plain arrays only
        assert str(data["format"]) == "ram-avatar-motion"
    with pytest.raises(ValueError, match=".npz"):
        save_motion(motion, tmp_path / "clip.pkl")


def test_find_motion_files(tmp_path):
    for name in ("a.bvh", "sub/b.NPZ", "sub/deeper/c.json", "notes.txt", ".hidden/d.bvh", "e.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    found = [p.relative_to(tmp_path).as_posix() for p in find_motion_files(tmp_path)]
    assert found == ["a.bvh", "sub/b.NPZ", "sub/deeper/c.json"]
    with pytest.raises(FileNotFoundError):
        find_motion_files(tmp_path / "missing")


# ----------------------------------------------------------------------------- bad files


def _bad_bvh(tmp_path: Path, synthetic_bvh, edit) -> Path:
    lines = synthetic_bvh[0].read_text().splitlines()
    path = tmp_path / "bad.bvh"
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda lines: lines[: len(lines) // 3], "truncated"),  # cut inside the hierarchy
        (lambda lines: lines[:-5], "truncated"),  # frames missing
        (lambda lines: lines[:-1] + [lines[-1] + " 0.0"], "channels"),  # one value too many
        (lambda lines: lines[:-1] + [" ".join(lines[-1].split()[:-2])], "channels"),
        (lambda lines: lines[:-1] + ["nan " + " ".join(lines[-1].split()[1:])], "NaN"),
        (lambda lines: [l.replace("Zrotation", "Wrotation", 1) for l in lines], "unknown channels"),
        (lambda lines: [l for l in lines if not l.strip().startswith("Frame Time")], "Frame Time"),
        (lambda lines: ["HIERARCHY", "MOTION", "Frames: 1", "Frame Time: 0.1", ""], "no ROOT"),
        (lambda lines: ["garbage"], "HIERARCHY"),
    ],
    ids=[
        "truncated-hierarchy",
        "truncated-frames",
        "extra-value",
        "missing-values",
        "nan",
        "bad-channel",
        "no-frame-time",
        "no-joints",
        "not-bvh",
    ],
)
def test_malformed_bvh_gives_a_clear_error(tmp_path, synthetic_bvh, edit, message):
    path = _bad_bvh(tmp_path, synthetic_bvh, edit)
    with pytest.raises(MotionFormatError, match=message) as error:
        load_motion(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_bvh_without_recognisable_joints_says_what_to_do(tmp_path, synthetic_bvh):
    def rename(lines: list[str]) -> list[str]:
        return [line.replace("Left", "Port").replace("Right", "Star") for line in lines]

    path = _bad_bvh(tmp_path, synthetic_bvh, rename)
    with pytest.raises(MotionFormatError, match="NAME_TABLE or pass extra_names"):
        load_motion(path)
    motion = load_motion(path, extra_names={"left_hip": ["PortUpLeg"], "right_hip": ["StarUpLeg"]})
    assert motion.joint_map["left_hip"] == "PortUpLeg"


ZEROS = np.zeros((4, 156))
PARAMS = {"global_orient": np.zeros((4, 3)), "body_pose": np.zeros((4, 63))}


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"pose": ZEROS, "trans": np.zeros((4, 3))}, "unknown .npz layout"),
        ({"poses": np.zeros((4, 150)), "trans": np.zeros((4, 3))}, r"\(T, 156\) SMPL-H"),
        ({"poses": ZEROS}, "'trans'"),
        ({"poses": np.full((4, 156), np.nan), "trans": np.zeros((4, 3))}, "NaN"),
        ({"poses": ZEROS, "trans": np.array([[0, 0, np.inf]] * 4)}, "'trans' holds NaN or infinite"),
        ({"poses": np.array([{"a": 1}] * 4, dtype=object), "trans": ZEROS[:, :3]}, "pickled object array"),
        (PARAMS | {"left_hand_pose": np.zeros((4, 12))}, "PCA"),
        (PARAMS | {"body_pose": np.zeros((4, 60))}, "'body_pose' must be"),
        ({"body_pose": np.zeros((4, 63))}, "global_orient"),
        (PARAMS | {"flat_hand_mean": np.array(False)}, "flat_hand_mean"),
        (PARAMS, "source_fps"),
    ],
    ids=[
        "wrong-keys",
        "wrong-width",
        "no-trans",
        "nan",
        "inf",
        "pickled",
        "pca-hands",
        "bad-body-shape",
        "no-orient",
        "mean-hands",
        "no-fps",
    ],
)
def test_malformed_npz_gives_a_clear_error(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    arrays = dict(arrays)
    if "poses" in arrays:
        arrays.setdefault("mocap_framerate", np.array(60.0))
    np.savez(path, **arrays)
    with pytest.raises(MotionFormatError, match=message) as error:
        load_motion(path)
    assert str(path) in str(error.value)


def test_other_bad_inputs(tmp_path, monkeypatch):
    from ram_avatar.tracking import TrackingError

    monkeypatch.setenv("RAM_AVATAR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "clip.mp4").write_bytes(b"\0")  # a video goes through the tracker, which refuses it
    with pytest.raises(TrackingError, match="clip.mp4"):
        load_motion(tmp_path / "clip.mp4")
    (tmp_path / "clip.fbx").write_bytes(b"\0")
    with pytest.raises(MotionFormatError, match="supported: .bvh, .npz, .json"):
        load_motion(tmp_path / "clip.fbx")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(MotionFormatError, match="not a readable .npz"):
        load_motion(tmp_path / "broken.npz")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(MotionFormatError, match="not valid JSON"):
        load_motion(tmp_path / "broken.json")
    (tmp_path / "text.json").write_text(json.dumps({"global_orient": ["a", "b", "c"], "body_pose": [0] * 63}))
    with pytest.raises(MotionFormatError, match="must hold numbers"):
        load_motion(tmp_path / "text.json")
    with pytest.raises(FileNotFoundError):
        load_motion(tmp_path / "missing.bvh")


# ----------------------------------------------------------------------------- command line


def test_motion_convert_command(tmp_path, synthetic_bvh, capsys):
    from ram_avatar.motion import cli

    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out.npz"
    args = parser.parse_args(["motion", "convert", str(synthetic_bvh[0]), str(out), "--fps", "15"])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "12 frames at 15 fps" in printed and "mapped 52 of 55" in printed and "jaw" in printed
    assert load_motion(out).num_frames == 12
