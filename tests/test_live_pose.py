"""The live pose solver (``ram_avatar.tracking.live_pose``) and its One-Euro filter.

Synthetic detections: the Anny template posed with a known pose, its keypoint points
(``keypoint_map``) projected through the live camera (``source_intrinsics`` of a 640 x 480
frame) into a MediaPipe-format :class:`FrameDetection`, with world landmarks (camera axes,
hip-centred), hand depths, and for the face test the face-mesh points the expression fit uses.

Measured errors (the poses below, a cold start then 2 steps a frame; degrees): limb bone
directions 0.7, pelvis 3.5 (its forward tilt is traded against the spine's), head 0.2, wrists
7.3 (their twist is shared with the forearm), finger bones 6.6, finger rotations 10.9; the
keypoints at 0.8 px. How the spine and neck share a bend is not observable, and not tested.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ram_avatar.body.layout import JOINT_NAMES, PARENTS, SmplxPose
from ram_avatar.tracking.crop import source_intrinsics
from ram_avatar.tracking.detect import FrameDetection
from ram_avatar.tracking.filters import OneEuroFilter, PoseFilter
from ram_avatar.tracking.fit import CAMERA_R
from ram_avatar.tracking.keypoint_map import keypoint_map
from ram_avatar.tracking.live_pose import LivePoseSolver, SolverConfig

SIZE = (480, 640)  # (H, W)
FPS = 30.0
J = JOINT_NAMES.index
LIMBS = [J(f"{s}_{j}") for s in ("left", "right") for j in ("elbow", "wrist", "knee", "ankle", "foot")]
FINGERS = list(range(25, 55))
# Tolerances (degrees): the measured errors (module docstring) plus a margin.
LIMB_TOL, ROOT_TOL, HEAD_TOL, WRIST_TOL, FINGER_BONE_TOL, FINGER_TOL = 2.0, 6.0, 2.0, 12.0, 10.0, 15.0


def _truth(t: float = 0.0) -> SmplxPose:
    """A pose at time t in [0, 1]: turned a little, arms bent in the image plane, the left thigh
    raised towards the camera (a bend in depth: only the world landmarks say which way),
    fingers curled by different amounts."""
    full = torch.zeros(55, 3)
    full[0, 1] = 0.3 + 0.2 * t
    for side, sign in (("left", -1.0), ("right", 1.0)):
        full[J(f"{side}_shoulder"), 0] = -math.pi / 2
        full[J(f"{side}_shoulder"), 2] = 0.3 * sign
        for k, finger in enumerate(("index", "middle", "ring", "pinky")):
            for s in (1, 2, 3):
                full[J(f"{side}_{finger}{s}"), 2] = (0.2 + 0.3 * k + 0.2 * t) * sign
        full[J(f"{side}_thumb2"), 1] = 0.4 * sign
    full[J("left_elbow"), 1] = -0.3 - 1.0 * t
    full[J("right_elbow"), 1] = 1.6 - 0.8 * t
    full[J("left_hip"), 0] = -0.5 - 0.3 * t
    full[J("left_knee"), 0] = 0.8
    full[J("right_knee"), 0] = 0.2
    full[J("spine2"), 0] = 0.1
    full[J("neck"), 1] = 0.3
    transl = torch.tensor([[0.1 + 0.1 * t, 0.05 * t, -3.2]])
    return SmplxPose.from_full(full[None], transl)


def _detection(template, pose: SmplxPose, expression: torch.Tensor | None = None, face: bool = False) -> FrameDetection:
    """What MediaPipe would report for the posed template (exact, see the module docstring)."""
    kmap = keypoint_map(template)
    K = torch.as_tensor(source_intrinsics(SIZE), dtype=torch.float32)
    with torch.no_grad():
        vertices, joints = template.pose_vertices(pose, None, expression)
    cam = kmap.points(joints, vertices)[0] @ CAMERA_R.T
    uv = cam[:, :2] / cam[:, 2:] * K[0, 0] + K[:2, 2]

    def points(index: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
        seen = (weight > 0).float()[:, None]  # unmapped points: not detected
        return (torch.cat([uv[index], torch.ones(len(index), 1)], 1) * seen).numpy()

    def depth(index: torch.Tensor) -> np.ndarray:  # relative to the wrist, in pixels at its depth
        z = cam[index, 2]
        return ((z - z[0]) * K[0, 0] / z[0]).numpy()

    body = points(kmap.body_index, kmap.body_weight)
    hips = cam[kmap.body_index[[23, 24]]].mean(0)
    world = (cam[kmap.body_index] - hips).numpy() * (kmap.body_weight > 0).numpy()[:, None]
    seen = body[body[:, 2] > 0, :2]
    mesh, mesh_z = np.zeros((478, 3), np.float32), np.zeros(478, np.float32)
    if face:
        mesh, mesh_z = _face(template, vertices[0], joints[0], K)
    return FrameDetection(
        body=body,
        body_world=world,
        left_hand=points(kmap.left_hand_index, kmap.hand_weight),
        right_hand=points(kmap.right_hand_index, kmap.hand_weight),
        face=mesh,
        face_z=mesh_z,
        mask=None,
        box=np.concatenate([seen.min(0), seen.max(0)]),
        others=0.0,
        left_hand_z=depth(kmap.left_hand_index),
        right_hand_z=depth(kmap.right_hand_index),
    )


def _face(template, vertices, joints, K) -> tuple[np.ndarray, np.ndarray]:
    """Face landmarks (478, 3) and their depths (478,): the points the expression fit reads."""
    from ram_avatar.tracking.face import MP, anny_face_points

    where = anny_face_points(template)
    mesh, mesh_z = np.zeros((478, 3), np.float32), np.zeros(478, np.float32)
    mesh[:, 2] = 1.0
    head = (joints[J("head")] @ CAMERA_R.T)[2]
    for name, index in MP.items():
        p = joints[J(where[name])] if isinstance(where[name], str) else vertices[where[name]]
        cam = p @ CAMERA_R.T
        mesh[index, :2] = (cam[:2] / cam[2] * K[0, 0] + K[:2, 2]).numpy()
        mesh_z[index] = float((cam[2] - head) * K[0, 0] / head)
    return mesh, mesh_z


def _errors(template, truth: SmplxPose, solved: SmplxPose) -> dict[str, float]:
    """Largest errors (degrees): limb bone directions, pelvis / head / wrist orientations, finger
    bone directions and finger rotations."""
    with torch.no_grad():
        a, b = template(truth).joints[0].numpy(), template(solved).joints[0].numpy()

    def bones(joints: list[int]) -> float:
        parents = [PARENTS[j] for j in joints]
        va, vb = a[joints] - a[parents], b[joints] - b[parents]
        cos = (va * vb).sum(1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1)
        return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).max())

    def global_rotations(pose: SmplxPose) -> Rotation:
        local = Rotation.from_rotvec(pose.full()[0].double().numpy()).as_matrix()
        world = local.copy()
        for j in range(1, 55):
            world[j] = world[PARENTS[j]] @ local[j]
        return Rotation.from_matrix(world)

    turned = np.degrees((global_rotations(truth).inv() * global_rotations(solved)).magnitude())
    local = Rotation.from_rotvec(truth.full()[0].double().numpy()).inv() * Rotation.from_rotvec(
        solved.full()[0].double().numpy()
    )
    return {
        "limbs": bones(LIMBS),
        "pelvis": float(turned[0]),
        "head": float(turned[J("head")]),
        "wrists": float(turned[[J("left_wrist"), J("right_wrist")]].max()),
        "finger_bones": bones(FINGERS),
        "fingers": float(np.degrees(local.magnitude()[FINGERS]).max()),
    }


def _assert_close(errors: dict[str, float]) -> None:
    limits = {
        "limbs": LIMB_TOL,
        "pelvis": ROOT_TOL,
        "head": HEAD_TOL,
        "wrists": WRIST_TOL,
        "finger_bones": FINGER_BONE_TOL,
        "fingers": FINGER_TOL,
    }
    assert all(errors[k] < v for k, v in limits.items()), errors


def _reprojection(template, solved: SmplxPose, detection: FrameDetection) -> float:
    """Largest pixel distance between the solved pose's keypoints and the detected ones."""
    again = _detection(template, solved)
    distances = [
        np.linalg.norm(getattr(again, k)[:, :2] - getattr(detection, k)[:, :2], axis=1)
        for k in ("body", "left_hand", "right_hand")
    ]
    return float(np.concatenate(distances).max())


def test_a_first_frame_recovers_the_pose_hands_included(anny_template):
    solver = LivePoseSolver(anny_template, SIZE, filter=False)
    truth = _truth()
    detection = _detection(anny_template, truth)
    solved = solver(detection, 0.0)
    assert solved.batch_size == 1 and solved.full().shape == (1, 55, 3)
    _assert_close(_errors(anny_template, truth, solved))
    # placed where the person is in the frame: the keypoints reproject onto the detections
    assert _reprojection(anny_template, solved, detection) < 1.5
    assert torch.allclose(solved.transl, truth.transl, atol=0.05)


def test_two_steps_a_frame_track_a_moving_pose_from_the_previous_frame(anny_template):
    warm = LivePoseSolver(anny_template, SIZE, filter=False)
    # the same number of steps without the previous frame: a cold start every frame
    cold = LivePoseSolver(anny_template, SIZE, filter=False, config=SolverConfig(cold_iters=2))
    worst = {}
    for i, t in enumerate(np.linspace(0.0, 1.0, 8)):
        truth = _truth(float(t))
        detection = _detection(anny_template, truth)
        errors = _errors(anny_template, truth, warm(detection, i / FPS))
        warm.config.cold_iters = 0  # from here on only warm steps can move the pose
        worst = {k: max(v, worst.get(k, 0.0)) for k, v in errors.items()}
        cold.reset()
        cold_errors = _errors(anny_template, truth, cold(detection, i / FPS))
    _assert_close(worst)
    assert cold_errors["limbs"] > 2 * worst["limbs"] or cold_errors["fingers"] > 2 * worst["fingers"]


def test_reset_and_a_long_gap_start_cold(anny_template):
    solver = LivePoseSolver(anny_template, SIZE, filter=False)
    fresh = LivePoseSolver(anny_template, SIZE, filter=False)
    first, later = _detection(anny_template, _truth(0.0)), _detection(anny_template, _truth(1.0))
    solver(first, 0.0)
    solver.reset()
    assert torch.equal(solver(later, 0.1).full(), fresh(later, 0.0).full())
    solver(first, 1.0)
    # the person was gone for longer than lost_after: the next frame is placed afresh
    assert torch.equal(solver(later, 1.0 + 2 * solver.config.lost_after).full(), fresh(later, 5.0).full())


def test_nobody_in_the_frame_gives_none(anny_template):
    solver = LivePoseSolver(anny_template, SIZE)
    empty = FrameDetection(
        body=np.zeros((33, 3), np.float32),
        body_world=np.zeros((33, 3), np.float32),
        left_hand=np.zeros((21, 3), np.float32),
        right_hand=np.zeros((21, 3), np.float32),
        face=np.zeros((478, 3), np.float32),
        face_z=np.zeros(478, np.float32),
        mask=None,
        box=None,
        others=0.0,
    )
    assert solver(empty, 0.0) is None
    assert solver(_detection(anny_template, _truth()), 0.1) is not None
    assert solver(empty, 0.2) is None


def test_an_unseen_hand_keeps_its_pose_briefly_then_rests(anny_template):
    solver = LivePoseSolver(anny_template, SIZE, filter=False)
    detection = _detection(anny_template, _truth())
    solver(detection, 0.0)
    detection.left_hand = np.zeros_like(detection.left_hand)
    held = solver(detection, 1 / FPS).left_hand_pose
    assert held.abs().max() > 0.3  # the curled fingers, held over a dropped detection
    rested = solver(detection, 1 / FPS + 2 * solver.config.hand_hold).left_hand_pose
    assert rested.abs().max() == 0  # flat, at rest, as the offline fit leaves unseen hands


def test_jaw_and_expressions_follow_the_face(anny_template):
    labels = anny_template.expression_labels
    solver = LivePoseSolver(anny_template, SIZE, filter=False)
    truth = _truth()
    for i in range(10):  # a neutral face first: the solver's reference
        solver(_detection(anny_template, truth, face=True), i / FPS)
    assert solver.expression.abs().max() < 0.05
    expression = torch.zeros(1, anny_template.expression_dim)
    expression[0, labels.index("mouthSmileLeft")] = 0.8
    truth.jaw_pose[0, 0] = 0.6 * anny_template.jaw_open_angle  # jawOpen 0.6
    solved = solver(_detection(anny_template, truth, expression, face=True), 10 / FPS)
    assert abs(solved.jaw_pose[0, 0] / anny_template.jaw_open_angle - 0.6) < 0.15
    smile = solver.expression[0, [labels.index("mouthSmileLeft"), labels.index("mouthSmileRight")]]
    assert smile[0] > 0.4 and smile[1] < 0.2
    faceless = solver(_detection(anny_template, truth, expression), 11 / FPS)  # the face not detected
    assert torch.equal(faceless.jaw_pose, solved.jaw_pose)  # holds the last face's, as the offline fit does


def test_filtered_output_leaves_the_warm_start_unfiltered(anny_template):
    generator = torch.Generator().manual_seed(0)
    plain = LivePoseSolver(anny_template, SIZE, filter=False)
    filtered = LivePoseSolver(anny_template, SIZE, filter=True)
    differs = []
    for i in range(5):
        detection = _detection(anny_template, _truth(0.1 * i))
        detection.body[:, :2] += np.asarray(2 * torch.randn(33, 2, generator=generator))
        a, b = plain(detection, i / FPS), filtered(detection, i / FPS)
        differs.append(not torch.allclose(a.full(), b.full(), atol=1e-4))
        np.testing.assert_array_equal(plain.r, filtered.r)  # the solver's own state: unfiltered
    assert all(differs[1:])  # the first frame passes through the filter as it is


def test_one_euro_passes_a_constant_and_cuts_jitter():
    constant = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    value = np.array([[0.3, -1.2, 2.0]])
    assert all(np.array_equal(constant(value, i / FPS), value) for i in range(20))

    rng = np.random.default_rng(0)
    t = np.arange(120) / FPS
    clean = np.sin(2 * np.pi * 0.3 * t)[:, None, None]  # a slow motion ...
    noisy = clean + 0.02 * rng.standard_normal(clean.shape)  # ... seen with jitter
    smooth = OneEuroFilter(min_cutoff=1.5, beta=1.0)
    out = np.stack([smooth(x, ti) for x, ti in zip(noisy, t)])

    def acceleration(x: np.ndarray) -> float:
        return float(np.abs(x[2:] - 2 * x[1:-1] + x[:-2]).mean())

    assert acceleration(out) < acceleration(noisy) / 2  # measured: 2.7x less


def test_one_euro_lag_on_a_drift_is_its_time_constant():
    drift = OneEuroFilter(min_cutoff=1.5, beta=0.0)
    t = np.arange(200) / FPS
    out = np.array([drift(np.array([[0.1 * ti]]), ti)[0, 0] for ti in t])
    lag_frames = (0.1 * t[-1] - out[-1]) / (0.1 / FPS)
    assert lag_frames == pytest.approx(drift.lag(FPS), abs=1.0)  # 3.2 frames at 30 fps, ~1 less discretised
    quick = OneEuroFilter(min_cutoff=1.5, beta=10.0)  # speed raises the cutoff: less lag
    fast = np.array([quick(np.array([[2.0 * ti]]), ti)[0, 0] for ti in t])
    assert (2.0 * t[-1] - fast[-1]) / (2.0 / FPS) < 0.5 * lag_frames


def test_pose_filter_is_continuous_through_a_half_turn():
    """Axis-angle jumps where a rotation passes pi (turning one's back to the camera); the
    filter works on 6D rotations, so a steady turn through pi comes out steady."""
    pose_filter = PoseFilter()
    angles = np.linspace(math.pi - 0.3, math.pi + 0.3, 30)
    out = []
    for i, angle in enumerate(angles):
        full = torch.zeros(1, 55, 3)
        full[0, 0, 1] = float(Rotation.from_rotvec([0, angle, 0]).as_rotvec()[1])  # wraps to -pi..pi
        pose, _ = pose_filter(SmplxPose.from_full(full, torch.zeros(1, 3)), None, i / FPS)
        out.append(Rotation.from_rotvec(pose.global_orient[0].double().numpy()))
    steps = [np.degrees((a.inv() * b).magnitude()) for a, b in zip(out, out[1:])]
    assert max(steps) < 2 * np.degrees(angles[1] - angles[0])
    constant = SmplxPose.from_full(torch.full((1, 55, 3), 0.2), torch.ones(1, 3))
    fresh = PoseFilter()
    for i in range(5):
        same, _ = fresh(constant, torch.ones(1, 52), i / FPS)
    assert torch.allclose(same.full(), constant.full(), atol=1e-6)


def test_detector_reports_hand_depths(shared_data):
    from ram_avatar.tracking.detect import PersonDetector
    from ram_avatar.tracking.video import VideoStream

    stream = VideoStream(shared_data / "video" / "tfjs_synthetic_dance_static_576.mp4", max_frames=30)
    with PersonDetector(others_every=0) as detector:
        for _, image in stream:
            detection = detector(image, stream.info.size)
            if detection.left_hand[0, 2] > 0:
                break
    assert detection.left_hand[0, 2] > 0, "no left hand in the first 30 frames"
    assert detection.left_hand_z.shape == (21,) and abs(detection.left_hand_z[0]) < 0.01  # relative to the wrist
    assert 0 < np.ptp(detection.left_hand_z) < np.ptp(detection.left_hand[:, :2], axis=0).max()


def test_any_template_joints_only(tmp_path):
    """The test suite's SMPL-X mesh has no known surface landmarks (nose, heels, fingertips): the
    solver uses the joints alone, and has no facial actions to fit."""
    from smplx_fixture import write_synthetic_smplx

    from ram_avatar.body import load_template

    template = load_template("smplx", model_path=write_synthetic_smplx(tmp_path))
    solver = LivePoseSolver(template, SIZE, filter=False)
    truth = _truth()
    detection = _detection(template, truth)
    solved = solver(detection, 0.0)
    assert _errors(template, truth, solved)["limbs"] < LIMB_TOL
    assert _reprojection(template, solved, detection) < 3.0  # measured 2.3: the fingertips are free
    assert solver.expression.shape == (1, template.expression_dim) and solver.expression.abs().max() == 0
