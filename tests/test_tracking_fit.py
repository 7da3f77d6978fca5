"""Fitting a body template to 2D keypoints (``ram_avatar.tracking.fit``) on synthetic clips.

The ground truth is the Anny template posed with a known motion; its keypoint points
(``keypoint_map``) are projected through a known camera into MediaPipe-format detections, with
1 px noise, a frame without any detection and hands that are seen only sometimes. The motion
bends the elbows in the image plane, where one view determines the angle (a bend towards the
camera is ambiguous in 2D: see the fit module's docstring).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import roma
import torch

from ram_avatar.body.layout import JOINT_NAMES, SmplxPose
from ram_avatar.render import Camera, rasterize
from ram_avatar.tracking.fit import (
    CAMERA_R,
    JOINT_LIMITS,
    FitConfig,
    fit_body,
    silhouette_frames,
)
from ram_avatar.tracking.keypoint_map import keypoint_map

SIZE, FOCAL = 256, 280.0  # a 1.7 m person 3.2 m away is ~150 px tall
MISSING = 2  # the frame without any detection
J = JOINT_NAMES.index


def _truth(frames: int = 5) -> tuple[SmplxPose, torch.Tensor, torch.Tensor]:
    """A known clip: pose (N), shape (6,), intrinsics (N, 3, 3)."""
    t = torch.linspace(0, 1, frames)
    full = torch.zeros(frames, 55, 3)
    full[:, 0, 1] = 0.15 - 0.1 * t  # a slight turn
    for side, sign in (("left", -1.0), ("right", 1.0)):
        # Upper arms twisted a quarter turn, so the elbows bend in the image plane (forearms up).
        full[:, J(f"{side}_shoulder"), 0] = -math.pi / 2
        full[:, J(f"{side}_shoulder"), 2] = 0.3 * sign
        for finger in ("index", "middle", "ring", "pinky"):
            for k in (1, 2, 3):
                full[:, J(f"{side}_{finger}{k}"), 2] = 0.6 * sign  # curled
    full[:, J("left_elbow"), 1] = -0.3 - 1.5 * t
    full[:, J("right_elbow"), 1] = 1.6 - 1.2 * t
    full[:, J("left_hip"), 2] = 0.1 + 0.4 * t  # the left leg swings out
    full[:, J("right_hip"), 2] = -0.2
    full[:, J("left_knee"), 0] = 0.1 + 0.2 * t
    full[:, J("right_knee"), 0] = 0.2
    full[:, J("spine2"), 0] = 0.1
    transl = torch.stack([0.1 + 0.1 * t, 0.05 * t, -3.2 + 0.1 * t], dim=1)
    K = torch.tensor([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]]).repeat(frames, 1, 1)
    return SmplxPose.from_full(full, transl), torch.full((6,), 0.5), K


def _camera(K: torch.Tensor) -> Camera:
    N = K.shape[0]
    return Camera(K, CAMERA_R.expand(N, 3, 3), torch.zeros(N, 3), (SIZE, SIZE))


def _detections(template, pose, shape, K, noise: float = 1.0) -> dict[str, np.ndarray]:
    """MediaPipe-format keypoints of the posed template: [x, y, conf], conf 0 = not detected."""
    kmap = keypoint_map(template)
    with torch.no_grad():
        out = template(pose, shape[None])
        uv = _camera(K).project(kmap.points(out.joints, out.vertices))[0]
    generator = torch.Generator().manual_seed(0)

    def points(index: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
        xy = uv[:, index] + noise * torch.randn(len(uv), len(index), 2, generator=generator)
        conf = (weight > 0).float().expand(len(uv), -1) * 0.9  # unmapped points: not detected
        return torch.cat([xy * conf[..., None].sign(), conf[..., None]], dim=-1).numpy()

    return {
        "body": points(kmap.body_index, kmap.body_weight),
        "left_hand": points(kmap.left_hand_index, kmap.hand_weight),
        "right_hand": points(kmap.right_hand_index, kmap.hand_weight),
    }


def _angle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(N,) angle in degrees between the vectors u and v (N, 3)."""
    cosine = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    return torch.rad2deg(torch.acos(cosine.clamp(-1, 1)))


def _bone(joints: torch.Tensor, start: str, end: str) -> torch.Tensor:
    return joints[:, J(end)] - joints[:, J(start)]


def _elbow_bend(joints: torch.Tensor, side: str) -> torch.Tensor:
    """(N,) degrees, 0 = straight arm."""
    return _angle(_bone(joints, f"{side}_shoulder", f"{side}_elbow"), _bone(joints, f"{side}_elbow", f"{side}_wrist"))


def _legs_apart(joints: torch.Tensor) -> torch.Tensor:
    """(N,) degrees between the thighs."""
    return _angle(_bone(joints, "left_hip", "left_knee"), _bone(joints, "right_hip", "right_knee"))


def _forward(pose: SmplxPose) -> torch.Tensor:
    """(N, 3) the direction the body faces (its +Z axis), in the world."""
    return roma.rotvec_to_rotmat(pose.global_orient)[..., 2]


@pytest.fixture(scope="module")
def clip(anny_template):
    """The truth, its posed joints, and the fit of its detections (default iterations)."""
    pose, shape, K = _truth()
    detections = _detections(anny_template, pose, shape, K)
    detections["body"][MISSING] = 0  # a missed detection
    detections["left_hand"][MISSING:] = 0  # the left hand is seen in the first frames only
    detections["right_hand"][:] = 0  # the right hand never (its true fingers are curled)
    result = fit_body(anny_template, detections, K.numpy(), SIZE, progress=False)
    with torch.no_grad():
        true_joints = anny_template(pose, shape[None]).joints
        fit_joints = anny_template(result.pose, result.shape[None]).joints
    return {"pose": pose, "K": K, "true": true_joints, "fit": fit_joints, "result": result}


def test_pose_points_match_the_full_forward(anny_template):
    """The fit poses only joints and landmark vertices (``AnnyTemplate.pose_points``): the same
    points and gradients as the full mesh, for any pose, shape (per clip or per frame), facial
    actions and jaw."""
    generator = torch.Generator().manual_seed(1)
    B = 3
    full, transl = 0.4 * torch.randn(B, 55, 3, generator=generator), torch.randn(B, 3, generator=generator)
    pose = SmplxPose.from_full(full, transl)
    pose.jaw_pose = torch.tensor([0.3, 0.1, 0.0]).repeat(B, 1)
    expression = 0.5 * torch.rand(B, anny_template.expression_dim, generator=generator)
    ids = torch.randint(0, anny_template.num_vertices, (30,), generator=generator)
    ids = torch.cat([keypoint_map(anny_template).vertex_ids, ids])  # the landmarks and any others
    for shape in (torch.rand(1, 6, generator=generator), torch.rand(B, 6, generator=generator)):
        results = []
        for fast in (True, False):
            body, phenotypes = pose.body_pose.clone().requires_grad_(True), shape.clone().requires_grad_(True)
            posed = SmplxPose(**{**vars(pose), "body_pose": body})
            if fast:
                points, joints = anny_template.pose_points(posed, phenotypes, expression, ids)
            else:
                vertices, joints = anny_template.pose_vertices(posed, phenotypes, expression)
                points = vertices[:, ids]
            (points.square().sum() + joints.sin().sum()).backward()
            results.append((points.detach(), joints.detach(), body.grad, phenotypes.grad))
        fast, full_mesh = results
        for value, expected in zip(fast[:2], full_mesh[:2]):  # points, joints
            assert (value - expected).abs().max() < 1e-5
        for grad, expected in zip(fast[2:], full_mesh[2:]):  # d/d body pose, d/d shape
            assert torch.allclose(grad, expected, rtol=1e-3, atol=1e-3 * expected.abs().max())


def test_anny_landmarks_sit_where_mediapipe_puts_them(anny_template):
    kmap = keypoint_map(anny_template)
    with torch.no_grad():
        out = anny_template(SmplxPose.zeros(1))  # T-pose: +Y up, facing +Z, left at +X
    points = kmap.points(out.joints, out.vertices)[0]
    body = points[kmap.body_index]  # (33, 3) MediaPipe Pose order
    nose, left_ear, right_ear, mouth_left, mouth_right = body[[0, 7, 8, 9, 10]]
    eyes = out.joints[0, [J("left_eye"), J("right_eye")]]
    assert abs(nose[0]) < 0.005 and nose[2] > eyes[:, 2].max() + 0.02  # the tip, on the midline
    assert left_ear[0] > 0.06 and right_ear[0] < -0.06 and left_ear[2] < eyes[0, 2] - 0.05
    assert mouth_left[0] > 0.01 and mouth_right[0] < -0.01 and mouth_left[1] < nose[1]
    for side, s in (("left", 1), ("right", -1)):
        ankle = out.joints[0, J(f"{side}_ankle")]
        heel, toe = body[29 if side == "left" else 30], body[31 if side == "left" else 32]
        assert toe[2] > ankle[2] + 0.1 and heel[2] < ankle[2] - 0.03 and heel[1] < ankle[1]
        hand = points[kmap.left_hand_index if side == "left" else kmap.right_hand_index]
        for tip, last_joint in ((8, 7), (12, 11), (16, 15), (20, 19)):  # flat fingers along +-X
            assert s * (hand[tip, 0] - hand[last_joint, 0]) > 0.015
    # Joint keypoints are the joints; the eye corners (1, 3, 4, 6) are not used.
    assert int(kmap.body_index[11]) == J("left_shoulder") and int(kmap.left_hand_index[5]) == J("left_index1")
    assert kmap.body_weight[[1, 3, 4, 6]].eq(0).all() and kmap.body_weight.gt(0).sum() == 29
    assert kmap.body_weight[23] < kmap.body_weight[11]  # MediaPipe hips are trusted less


def test_fit_reprojects_the_keypoints(clip):
    result, seen = clip["result"], [i for i in range(5) if i != MISSING]
    assert np.isnan(result.body_error[MISSING])
    assert np.median(result.body_error[seen]) < 2.0  # px at 256^2, against 1 px noise per axis
    # The true joints (noise-free) land within a few pixels, the missed frame included.
    camera = _camera(clip["K"])
    true_uv, fit_uv = camera.project(clip["true"])[0], camera.project(clip["fit"])[0]
    body = list(range(22))
    assert (true_uv - fit_uv)[:, body].norm(dim=-1).median() < 2.5
    assert (true_uv - fit_uv)[MISSING, body].norm(dim=-1).median() < 4.0


def test_fit_recovers_the_big_joint_angles(clip):
    true, fit = clip["true"], clip["fit"]
    for side in ("left", "right"):  # elbows bending 17 -> 103 and 92 -> 23 degrees
        error = (_elbow_bend(fit, side) - _elbow_bend(true, side)).abs()
        assert error.max() < 15.0, f"{side} elbow off by {error.tolist()} degrees"
    error = (_legs_apart(fit) - _legs_apart(true)).abs()  # 17 -> 40 degrees
    assert error.max() < 8.0, f"legs apart off by {error.tolist()} degrees"


def test_missed_frame_lies_between_its_neighbours(clip):
    joints = clip["fit"] - clip["fit"][:, :1]  # pelvis-relative, metres
    between = (joints[MISSING - 1] + joints[MISSING + 1]) / 2
    assert (joints[MISSING] - between).norm(dim=-1).max() < 0.06  # the truth: 0.026
    transl = clip["result"].pose.transl
    assert (transl[MISSING] - (transl[MISSING - 1] + transl[MISSING + 1]) / 2).norm() < 0.02


def test_unseen_hands_stay_at_rest(clip):
    result = clip["result"]
    assert result.pose.right_hand_pose.eq(0).all()
    assert result.pose.left_hand_pose[MISSING:].eq(0).all()
    assert np.isnan(result.right_hand_error).all() and np.isnan(result.left_hand_error[MISSING:]).all()
    # Where the left hand is seen, its curled fingers are fitted: curled (about -Z) and on target.
    curl = result.pose.left_hand_pose[:MISSING, :12, 2]  # index .. ring joints
    assert curl.mean() < -0.3
    assert (result.left_hand_error[:MISSING] < 2.5).all()


def test_camera_shape_and_placement(clip):
    result = clip["result"]
    assert torch.equal(result.R, CAMERA_R.expand(5, 3, 3)) and result.t.eq(0).all()
    assert torch.equal(result.K, clip["K"])
    assert result.shape.min() >= 0 and result.shape.max() <= 1
    assert (result.shape - 0.5).abs().max() < 0.1  # the true shape is the default
    # Facing the camera (at the origin, looking down -Z): the body faces +Z.
    assert _forward(result.pose)[:, 2].min() > 0.95
    depth, true_depth = -clip["fit"][:, 0, 2], -clip["true"][:, 0, 2]
    assert ((depth - true_depth).abs() / true_depth).max() < 0.06
    assert set(result.loss_curve) == {"global", "body", "hands"}
    curve = result.loss_curve["body"]
    assert len(curve) <= FitConfig().iters["body"] and curve[-1] < 0.1 * curve[0]


def test_joint_limits_let_joints_bend_only_the_anatomical_way(anny_template):
    """Each hinge posed at its bound's far end bends the right way (a sign error would invert it)."""
    low, high = JOINT_LIMITS.unbind(-1)  # (55, 3)
    cases = {  # joint: (axis, the bound that bends it, joint whose move we check, expected move)
        "left_knee": (0, high, "left_ankle", (2, -1.0)),  # the shin goes back
        "right_knee": (0, high, "right_ankle", (2, -1.0)),
        "left_elbow": (1, low, "left_wrist", (2, 1.0)),  # the forearm swings forward
        "right_elbow": (1, high, "right_wrist", (2, 1.0)),
        "left_index1": (2, low, "left_index3", (1, -1.0)),  # the finger curls down, to the palm
        "right_index1": (2, high, "right_index3", (1, -1.0)),
    }
    with torch.no_grad():
        rest = anny_template(SmplxPose.zeros(1)).joints[0]
        for joint, (axis, bound, moved, (coordinate, sign)) in cases.items():
            full = torch.zeros(1, 55, 3)
            full[0, J(joint), axis] = bound[J(joint), axis]
            bent = anny_template(SmplxPose.from_full(full, torch.zeros(1, 3))).joints[0]
            assert sign * (bent[J(moved), coordinate] - rest[J(moved), coordinate]) > 0.01, joint
            # ...and the opposite bound allows almost nothing (hyperextension).
            other = (high if bound is low else low)[J(joint), axis]
            assert abs(other) <= 0.3, joint


def test_back_to_the_camera_is_fitted_facing_away(anny_template):
    pose, shape, K = _truth(2)
    pose.global_orient[:, 1] += math.pi  # turned around
    detections = {"body": _detections(anny_template, pose, shape, K)["body"]}  # no hand keys
    result = fit_body(anny_template, detections, K.numpy(), SIZE, max_iters=40, progress=False)
    assert _forward(result.pose)[:, 2].max() < -0.9
    assert [len(c) for c in result.loss_curve.values()] == [40, 40, 40]  # never stops before 2 x 20 steps
    assert result.pose.left_hand_pose.eq(0).all() and np.isnan(result.left_hand_error).all()


def test_needs_a_torso_somewhere(anny_template):
    detections = _detections(anny_template, *_truth(2))
    detections["body"][:, [11, 12, 23, 24]] = 0
    with pytest.raises(ValueError, match="shoulders"):
        fit_body(anny_template, detections, _truth(2)[2].numpy(), SIZE, max_iters=1, progress=False)


def test_smplx_template_fits_joints_only(tmp_path):
    """Any template works: the test SMPL-X mesh has no known landmarks, so only joints count."""
    from smplx_fixture import write_synthetic_smplx

    from ram_avatar.body import load_template

    template = load_template("smplx", model_path=write_synthetic_smplx(tmp_path))
    kmap = keypoint_map(template)
    assert len(kmap.vertex_ids) == 0 and kmap.body_weight[[0, 7, 29, 31]].eq(0).all()
    pose, _, K = _truth(3)
    shape = template.default_shape(1)[0]
    detections = _detections(template, pose, shape, K)
    result = fit_body(template, detections, K.numpy(), SIZE, max_iters=100, progress=False)
    assert result.shape.shape == (template.shape_dim,)
    assert np.median(result.body_error) < 2.0


def _masks(template, pose, shape, K) -> np.ndarray:
    """(N, SIZE, SIZE) uint8 person masks of the posed template."""
    with torch.no_grad():
        vertices = template(pose, shape[None]).vertices
    return rasterize(vertices, template.faces, _camera(K)).mask.numpy().astype(np.uint8) * 255


def test_a_stage_stops_once_its_loss_plateaus(anny_template):
    pose, shape, K = _truth(2)
    detections = _detections(anny_template, pose, shape, K)
    config = FitConfig(plateau_steps=5, plateau_tolerance=1e9)  # any 5 steps count as a plateau
    result = fit_body(anny_template, detections, K.numpy(), SIZE, config=config, max_iters=30, progress=False)
    assert {stage: len(c) for stage, c in result.loss_curve.items()} == {"global": 11, "body": 11, "hands": 11}


def test_masks_add_the_silhouette_stage(anny_template):
    pose, shape, K = _truth(3)
    detections, masks = _detections(anny_template, pose, shape, K), _masks(anny_template, pose, shape, K)
    config = FitConfig(silhouette_batch=2, plateau_steps=1, plateau_tolerance=1e9)
    result = fit_body(
        anny_template, detections, K.numpy(), SIZE, masks=masks, config=config, max_iters=5, progress=False
    )
    assert list(result.loss_curve) == ["global", "body", "hands", "silhouette"]
    # The silhouette stage never stops early (its loss depends on the frames a step compares).
    assert len(result.loss_curve["silhouette"]) == 5 and np.isfinite(result.loss_curve["silhouette"]).all()


def test_silhouette_batches_cover_the_clip():
    """Each step compares at most ``silhouette_batch`` frames, spread over the clip, and every
    ceil(N / batch) consecutive steps compare every frame once."""
    batches = [silhouette_frames(10, 4, step).tolist() for step in range(4)]
    assert batches == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8], [0, 3, 6, 9]]
    assert silhouette_frames(3, 8, 5).tolist() == [0, 1, 2]  # a short clip: all frames each step


@pytest.mark.slow
def test_silhouette_stage_keeps_the_fit_on_the_mask(anny_template):
    pose, shape, K = _truth(4)
    masks = _masks(anny_template, pose, shape, K)
    detections = _detections(anny_template, pose, shape, K)
    result = fit_body(anny_template, detections, K.numpy(), SIZE, masks=masks, progress=False)
    with torch.no_grad():
        vertices = anny_template(result.pose, result.shape[None]).vertices
    fitted = rasterize(vertices, anny_template.faces, _camera(K)).mask.numpy()
    iou = (fitted & (masks > 0)).sum() / (fitted | (masks > 0)).sum()
    assert iou > 0.85
    assert np.median(result.body_error) < 2.0
