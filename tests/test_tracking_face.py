"""Face tracking: the landmark mesh lifted to 3D, and Anny's facial actions fitted to it."""

from __future__ import annotations

import numpy as np
import torch

from ram_avatar.body import SmplxPose
from ram_avatar.body.layout import JOINT_NAMES
from ram_avatar.tracking.face import MP, anny_face_points, fit_expressions, lift_face_mesh, split_jaw


def _faces_from_anny(template, expressions: torch.Tensor) -> np.ndarray:
    """(N, 478, 3) face meshes whose MediaPipe points used by the fit come from Anny posed with
    ``expressions`` (N, 52), seen rotated and scaled like a real head (the fit must not care)."""
    points = anny_face_points(template)
    pose = SmplxPose.zeros(len(expressions))
    with torch.no_grad():
        vertices, joints = template.pose_vertices(pose, None, expressions)
    mesh = np.zeros((len(expressions), 478, 3), np.float32)
    turn = torch.tensor([[0.94, 0.0, 0.34], [0.0, 1.0, 0.0], [-0.34, 0.0, 0.94]])  # ~20 deg yaw
    for name, index in MP.items():
        where = points[name]
        p = joints[:, JOINT_NAMES.index(where)] if isinstance(where, str) else vertices[:, where]
        mesh[:, index] = (3.0 * p.float() @ turn.T).numpy()
    return mesh


def test_known_expressions_are_recovered(anny_template):
    labels = anny_template.expression_labels
    expressions = torch.zeros(12, anny_template.expression_dim)
    expressions[9, labels.index("jawOpen")] = 0.5
    expressions[10, labels.index("eyeBlinkLeft")] = 1.0
    expressions[11, labels.index("mouthSmileRight")] = 0.7
    found = np.ones(12, bool)
    actions = fit_expressions(anny_template, _faces_from_anny(anny_template, expressions), found, smooth=1)
    a = lambda frame, name: actions[frame, labels.index(name)]  # noqa: E731
    assert abs(a(9, "jawOpen") - 0.5) < 0.1
    assert a(10, "eyeBlinkLeft") > 0.8 and a(10, "eyeBlinkRight") < 0.1  # the right eye, not both
    assert a(11, "mouthSmileRight") > 0.4 and a(11, "mouthSmileLeft") < 0.2
    assert np.abs(actions[:9]).max() < 0.05  # the neutral frames stay neutral


def test_frames_without_a_face_take_their_neighbours_actions(anny_template):
    labels = anny_template.expression_labels
    expressions = torch.zeros(10, anny_template.expression_dim)
    expressions[6:, labels.index("jawOpen")] = 0.6
    meshes = _faces_from_anny(anny_template, expressions)
    found = np.ones(10, bool)
    found[7] = False
    meshes[7] = 0.0  # an undetected face
    actions = fit_expressions(anny_template, meshes, found, smooth=1)
    jaw = actions[:, labels.index("jawOpen")]
    assert abs(jaw[7] - jaw[8]) < 0.05 and jaw[7] > 0.4


def test_jaw_actions_become_the_smplx_jaw_pose(anny_template):
    labels = anny_template.expression_labels
    actions = np.zeros((2, anny_template.expression_dim), np.float32)
    actions[1, labels.index("jawOpen")] = 0.8
    actions[1, labels.index("eyeBlinkLeft")] = 0.3
    jaw, rest = split_jaw(anny_template, actions)
    assert jaw[0].tolist() == [0, 0, 0] and jaw[1, 0] > 0
    assert rest[1, labels.index("jawOpen")] == 0 and rest[1, labels.index("eyeBlinkLeft")] == np.float32(0.3)
    # Posing with the jaw pose gives the same mesh as posing with the jaw action.
    pose = SmplxPose.zeros(1)
    pose.jaw_pose = torch.as_tensor(jaw[1:])
    with torch.no_grad():
        via_pose = anny_template.pose_vertices(pose, None, torch.as_tensor(rest[1:]))[0]
        via_action = anny_template.pose_vertices(SmplxPose.zeros(1), None, torch.as_tensor(actions[1:]))[0]
    assert (via_pose - via_action).abs().max() < 1e-4


def test_lifted_face_mesh_reprojects_onto_the_landmarks():
    rng = np.random.default_rng(0)
    face = np.concatenate([rng.uniform(100, 160, (2, 478, 2)), np.ones((2, 478, 1))], -1).astype(np.float32)
    face[1, :, 2] = 0  # no face in frame 1
    face_z = rng.normal(0, 5, (2, 478)).astype(np.float32)
    K = np.array([[[600, 0, 128], [0, 600, 128], [0, 0, 1]]] * 2, np.float32)
    mesh = lift_face_mesh(face, face_z, K, np.array([2.5, 2.5], np.float32))
    projected = mesh[0, :, :2] / mesh[0, :, 2:] * 600 + 128
    assert np.abs(projected - face[0, :, :2]).max() < 1e-3
    assert abs(np.median(mesh[0, :, 2]) - 2.5) < 0.01
    assert not mesh[1].any()
