"""The Anny template driven by SMPL-X-layout poses: poses whose look is known."""

from __future__ import annotations

import math
import re

import pytest
import roma
import torch

from ram_avatar.body import JOINT_NAMES, PARENTS, SmplxPose, expand_mesh, geometry, vertex_normals

J = {name: i for i, name in enumerate(JOINT_NAMES)}
BODY = {name: i - 1 for i, name in enumerate(JOINT_NAMES[:22])}  # index into body_pose


def posed(template, **rotations: tuple[float, float, float]):
    """Pose with the named joints rotated (axis-angle), everything else at zero."""
    pose = SmplxPose.zeros(1)
    full = pose.full()
    for name, rotvec in rotations.items():
        full[0, J[name]] = torch.tensor(rotvec)
    return template(SmplxPose.from_full(full, pose.transl))


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.degrees(math.acos(float((unit(a) * unit(b)).sum().clamp(-1, 1))))


def test_shapes_and_buffers(anny_template):
    out = anny_template(SmplxPose.zeros(2))
    V, F = anny_template.num_vertices, anny_template.faces.shape[0]
    assert out.vertices.shape == (2, V, 3) and out.normals.shape == (2, V, 3)
    assert out.joints.shape == (2, 55, 3)
    assert (V, F) == (13718, 27420)
    assert anny_template.uv_faces.shape == (F, 3)
    assert anny_template.uvs.min() >= 0 and anny_template.uvs.max() <= 1
    assert anny_template.uv_faces.max() < anny_template.uvs.shape[0]
    assert anny_template.canonical.abs().max() <= 1.0 + 1e-6
    assert anny_template.shape_dim == 6 and anny_template.expression_dim == 52
    assert "jawOpen" in anny_template.expression_labels


def test_t_pose_is_smplx_rest_pose(anny_template):
    """Zero pose = SMPL-X's T-pose: arms straight out at shoulder height, legs straight down,
    facing +Z, +Y up."""
    j = anny_template(SmplxPose.zeros(1)).joints[0]
    for side, sign in (("left", 1), ("right", -1)):
        arm = [j[J[f"{side}_{n}"]] for n in ("shoulder", "elbow", "wrist", "middle1", "middle3")]
        for a, b in zip(arm, arm[1:]):
            assert angle_deg(b - a, torch.tensor([sign * 1.0, 0, 0])) < 1.0
        leg = [j[J[f"{side}_{n}"]] for n in ("hip", "knee", "ankle")]
        for a, b in zip(leg, leg[1:]):
            assert angle_deg(b - a, torch.tensor([0, -1.0, 0])) < 1.0
        assert j[J[f"{side}_foot"], 2] > j[J[f"{side}_ankle"], 2] + 0.05  # toes point forward
    assert j[J["head"], 1] > j[J["neck"], 1] > j[J["pelvis"], 1]
    assert j[J["left_eye"], 2] > j[J["head"], 2]  # eyes are in front: the body faces +Z
    assert j[J["left_shoulder"], 0] > 0 > j[J["right_shoulder"], 0]  # its left is +X
    assert torch.allclose(j[J["left_wrist"]] * torch.tensor([-1, 1, 1]), j[J["right_wrist"]], atol=2e-3)


def test_palms_face_down_in_t_pose(anny_template):
    j = anny_template(SmplxPose.zeros(1)).joints[0]
    for side in ("left", "right"):
        along = j[J[f"{side}_middle1"]] - j[J[f"{side}_wrist"]]
        across = j[J[f"{side}_index1"]] - j[J[f"{side}_pinky1"]]
        assert angle_deg(across, torch.tensor([0, 0, 1.0])) < 15  # thumb side forward
        palm = torch.linalg.cross(along, across) * (1 if side == "left" else -1)
        assert angle_deg(palm, torch.tensor([0, -1.0, 0])) < 15


def test_arms_down(anny_template):
    # Rotating the shoulder -90 degrees about +Z takes the left arm from +X to -Y.
    j = posed(anny_template, left_shoulder=(0, 0, -math.pi / 2), right_shoulder=(0, 0, math.pi / 2)).joints[0]
    for side in ("left", "right"):
        shoulder, wrist = j[J[f"{side}_shoulder"]], j[J[f"{side}_wrist"]]
        assert angle_deg(wrist - shoulder, torch.tensor([0, -1.0, 0])) < 1.0
        assert shoulder[1] - wrist[1] > 0.4  # the hand hangs about an arm's length lower


def test_elbow_bent_90_degrees(anny_template):
    # -90 degrees about +Y turns the left forearm from +X to +Z (forward).
    j = posed(anny_template, left_elbow=(0, -math.pi / 2, 0)).joints[0]
    upper = j[J["left_elbow"]] - j[J["left_shoulder"]]
    fore = j[J["left_wrist"]] - j[J["left_elbow"]]
    assert abs(angle_deg(upper, fore) - 90) < 1.0
    assert angle_deg(fore, torch.tensor([0, 0, 1.0])) < 1.0
    rest = anny_template(SmplxPose.zeros(1)).joints[0]
    assert torch.allclose(j[J["right_wrist"]], rest[J["right_wrist"]], atol=1e-5)


def test_fist_brings_fingertips_to_the_palm(anny_template):
    full = SmplxPose.zeros(1).full()
    for finger in ("index", "middle", "ring", "pinky"):
        for k in (1, 2, 3):  # curl towards the palm (down, -Y, in the T-pose)
            full[0, J[f"left_{finger}{k}"]] = torch.tensor([0, 0, -1.4])
            full[0, J[f"right_{finger}{k}"]] = torch.tensor([0, 0, 1.4])
    fist = anny_template(SmplxPose.from_full(full, torch.zeros(1, 3)))
    flat = anny_template(SmplxPose.zeros(1))
    labels = anny_template.model.bone_labels
    tips = [labels.index(f"finger{f}-3.{s}") for f in (2, 3, 4, 5) for s in "LR"]
    weights = anny_template.model.vertex_bone_weights
    indices = anny_template.model.vertex_bone_indices
    on_tip = ((weights > 0.9) & torch.isin(indices, torch.tensor(tips))).any(1)
    for side in ("left", "right"):
        wrist_f, wrist_o = fist.joints[0, J[f"{side}_wrist"]], flat.joints[0, J[f"{side}_wrist"]]
        side_x = (flat.vertices[0, :, 0] > 0) == (side == "left")
        tip_f = fist.vertices[0, on_tip & side_x]
        tip_o = flat.vertices[0, on_tip & side_x]
        # Flat: fingertips ~16-19 cm from the wrist; in a fist they fold back next to it.
        assert (tip_o - wrist_o).norm(dim=1).mean() > 0.14
        assert (tip_f - wrist_f).norm(dim=1).mean() < 0.09
        assert (tip_f[:, 1] < wrist_f[1]).all()  # folded under the palm, which faces down


def test_matches_smplx_kinematics(anny_template):
    """For random poses, Anny's joints move exactly as SMPL-X forward kinematics on the same
    rest skeleton: joint j = joint parent + G_parent (rest_j - rest_parent) + transl."""
    gen = torch.Generator().manual_seed(0)
    full = 0.4 * torch.randn(3, 55, 3, generator=gen)
    full[:, J["jaw"]] = 0  # the jaw is a facial action on Anny, checked separately
    transl = torch.randn(3, 3, generator=gen)
    rest = anny_template(SmplxPose.zeros(1)).joints[0]
    out = anny_template(SmplxPose.from_full(full, transl)).joints
    rot = roma.rotvec_to_rotmat(full)
    g = [rot[:, 0]]
    expected = [rest[0].expand(3, 3) + transl]
    for j in range(1, 55):
        p = PARENTS[j]
        g.append(g[p] @ rot[:, j])
        expected.append(expected[p] + (g[p] @ (rest[j] - rest[p])[:, None])[..., 0])
    expected = torch.stack(expected, 1)
    skip = J["jaw"]  # positioned from the head; its rotation maps to facial actions
    keep = [j for j in range(55) if j != skip]
    assert (out[:, keep] - expected[:, keep]).norm(dim=-1).max() < 1e-4


def test_jaw_pose_opens_the_mouth(anny_template):
    closed = anny_template(SmplxPose.zeros(1))
    pose = SmplxPose.zeros(1)
    pose.jaw_pose[:] = torch.tensor([0.3, 0.0, 0.0])  # SMPL-X: +X rotation opens the jaw
    opened = anny_template(pose)
    drop = closed.vertices[0, :, 1] - opened.vertices[0, :, 1]
    assert 0.015 < drop.max() < 0.06  # the chin drops by a few centimetres
    # jaw_pose and the jawOpen action are the same motion: 0.3 rad = 0.3 / angle of jawOpen=1.
    actions = torch.zeros(1, 52)
    actions[0, anny_template.expression_labels.index("jawOpen")] = 0.3 / anny_template.jaw_open_angle
    by_action = anny_template(SmplxPose.zeros(1), expression=actions)
    assert torch.allclose(by_action.vertices, opened.vertices, atol=1e-6)


def test_local_rotation_moves_only_its_limb(anny_template):
    """LBS: bending the left elbow moves vertices skinned to the forearm and hand, no others."""
    rest = anny_template(SmplxPose.zeros(1)).vertices[0]
    bent = posed(anny_template, left_elbow=(0, -1.0, 0)).vertices[0]
    moved = (bent - rest).norm(dim=1) > 1e-5
    labels = anny_template.model.bone_labels
    forearm_and_hand = torch.tensor(
        [i for i, b in enumerate(labels) if re.fullmatch(r"(lowerarm|wrist|finger|metacarpal).*\.L", b)]
    )
    weights, indices = anny_template.model.vertex_bone_weights, anny_template.model.vertex_bone_indices
    influenced = ((weights > 0) & torch.isin(indices, forearm_and_hand)).any(1)
    assert moved.sum() > 500
    assert not (moved & ~influenced).any()
    assert (moved[influenced & (weights * torch.isin(indices, forearm_and_hand)).sum(1).gt(0.5)]).all()


def test_translation_and_shape(anny_template):
    pose = SmplxPose.zeros(1)
    base = anny_template(pose).vertices
    pose.transl[:] = torch.tensor([0.1, -0.2, 0.3])
    assert torch.allclose(anny_template(pose).vertices, base + pose.transl[:, None], atol=1e-5)
    tall = anny_template.default_shape()
    tall[0, anny_template.shape_labels.index("height")] = 1.0
    height = lambda v: float(v[0, :, 1].max() - v[0, :, 1].min())  # noqa: E731
    assert height(anny_template(SmplxPose.zeros(1), shape=tall).vertices) > height(base) + 0.05


def test_normals_point_outward_and_expanded_mesh(anny_template):
    out = anny_template(SmplxPose.zeros(1))
    assert torch.allclose(out.normals.norm(dim=-1), torch.ones(1, anny_template.num_vertices), atol=1e-4)
    top = out.vertices[0, :, 1].argmax()
    assert out.normals[0, top, 1] > 0.9  # the top of the head faces up
    front = out.vertices[0, :, 2].argmax()
    assert out.normals[0, front, 2] > 0.5
    assert torch.allclose(out.normals, vertex_normals(out.vertices, anny_template.faces))
    grown = expand_mesh(out.vertices, anny_template.faces, 0.02)
    assert torch.allclose(
        (grown - out.vertices).norm(dim=-1), torch.full((1, anny_template.num_vertices), 0.02), atol=1e-5
    )
    assert torch.allclose(out.expanded(0.02), grown)
    # pushed outward: the body gets wider
    assert grown[0, :, 0].max() > out.vertices[0, :, 0].max() + 0.015


def test_gradients_reach_pose_and_shape(anny_template):
    pose = SmplxPose.zeros(1)
    pose.body_pose.requires_grad_(True)
    shape = anny_template.default_shape().requires_grad_(True)
    out = anny_template(pose, shape=shape)
    out.joints[0, J["left_wrist"], 1].backward()
    assert pose.body_pose.grad[0, BODY["left_shoulder"]].abs().sum() > 0
    assert shape.grad.abs().sum() > 0


@pytest.mark.parametrize("compiled", [True, False])
def test_vertex_normals_are_the_area_weighted_mean_of_adjacent_faces(compiled, monkeypatch):
    monkeypatch.setattr(geometry, "COMPILED_CPU_POSING", compiled)  # the Numba loop or PyTorch
    # A square pyramid (apex up, base open) and a vertex no face uses.
    vertices = torch.tensor([[0.0, 1, 0], [-1, 0, -1], [1, 0, -1], [1, 0, 1], [-1, 0, 1], [5, 5, 5]])[None]
    faces = torch.tensor([[0, 2, 1], [0, 3, 2], [0, 4, 3], [0, 1, 4]])
    normals = vertex_normals(vertices.repeat(2, 1, 1), faces)
    assert torch.allclose(normals[0, 0], torch.tensor([0.0, 1, 0]), atol=1e-6)  # symmetric apex
    # A base corner: the mean of its two (equal-area) faces' normals.
    expected = torch.nn.functional.normalize(torch.tensor([0.0, 1, -1]) + torch.tensor([-1.0, 1, 0]), dim=0)
    assert torch.allclose(normals[0, 1], expected, atol=1e-6)
    assert torch.equal(normals[:, 5], torch.zeros(2, 3))
    assert torch.equal(normals[0], normals[1])


def test_posing_without_gradients_is_the_closed_form_of_annys_forward(anny_template):
    """Without gradients the template poses in closed form with the shape's rest mesh cached
    (``pose_points``): the same vertices and joints as Anny's own forward, for any pose, shape,
    expression and jaw, and a new shape is not served from the old shape's cache."""
    generator = torch.Generator().manual_seed(3)
    B = 2
    pose = SmplxPose.from_full(0.4 * torch.randn(B, 55, 3, generator=generator), torch.randn(B, 3, generator=generator))
    pose.jaw_pose = torch.tensor([0.3, 0.1, 0.0]).repeat(B, 1)
    expression = 0.5 * torch.rand(B, anny_template.expression_dim, generator=generator)
    for shape in (None, torch.rand(1, 6, generator=generator), torch.rand(B, 6, generator=generator), None):
        for face in (None, expression):
            full = anny_template.pose_vertices(pose, shape, face)  # gradients on: Anny's forward
            with torch.no_grad():
                closed = anny_template.pose_vertices(pose, shape, face)
            for got, expected in zip(closed, full):
                assert (got - expected).abs().max() < 1e-5


def test_compiled_vertex_normals_match_pytorch_on_the_body(anny_template, monkeypatch):
    pose = SmplxPose.zeros(2)
    pose.body_pose[1, 15, 2] = -1.2
    with torch.no_grad():
        vertices = anny_template(pose).vertices
        compiled = vertex_normals(vertices, anny_template.faces)
        monkeypatch.setattr(geometry, "COMPILED_CPU_POSING", False)
        plain = vertex_normals(vertices, anny_template.faces)
    assert (compiled - plain).abs().max() < 1e-5
