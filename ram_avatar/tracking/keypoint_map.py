"""Where each MediaPipe keypoint sits on a body template: a joint, or a surface vertex.

MediaPipe Pose (33 points) and MediaPipe Hand (21 points per hand) mark a mix of joint centres
(shoulders, elbows, knuckles ...) and surface points (nose tip, ears, heels, fingertips ...).
Joint-like points map to SMPL-X-layout joints, which every template outputs; surface points map
to template vertices ("landmarks"), which are template-specific:

* Anny: found programmatically on the T-posed default body (SMPL-X frame: +Y up, facing +Z),
  once per process (``anny_landmarks``), from Anny's skinning weights:
    nose          the most forward (+Z) vertex skinned > 0.9 to the ``head`` bone
    ears          the most lateral (+-X) such head vertices within 2 cm of the eyes' height
    mouth corners the vertex that ``mouthSmileLeft`` / ``mouthSmileRight`` moves most (the
                  side is read from its x, so ARKit's left/right naming cannot swap them)
    fingertips    the vertex skinned > 0.9 to ``finger<k>-3.<side>`` farthest from the joint
                  at that bone's head (the distal phalanx's tip)
    toe tips      the most forward vertex skinned > 0.5 to any toe bone of that foot
                  (MediaPipe's "foot index" point)
    heels         the most backward (-Z) vertex skinned > 0.5 to ``foot.<side>``
* SMPL-X (the official 10,475-vertex mesh): smplx's own ``vertex_ids['smplx']`` table (nose,
  ears, fingertips, big toes, heels; no mouth corners).
* Any other mesh (e.g. the test suite's synthetic SMPL-X): joints only; the surface points get
  weight 0, i.e. are ignored.

Weights (``BODY_WEIGHTS``) lower the points that sit off the template's joints: MediaPipe's hips
are annotated on the outer hip, wider and lower than a skeleton's hip joint centres, so they get
0.5; the pose model's coarse hand points (17-22) get 0.3 (the hand model does hands better); the
face points get 0.5 (five of them would otherwise outvote the neck and torso). MediaPipe's inner
and outer eye corners (1, 3, 4, 6) are not used: the eye centres (2, 5) map to the eye joints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ram_avatar.body.layout import JOINT_NAMES, NUM_JOINTS, SmplxPose
from ram_avatar.body.template import BodyTemplate

FINGERS = ("thumb", "index", "middle", "ring", "pinky")

# MediaPipe Pose index -> SMPL-X joint, or landmark (a surface vertex, see the module docstring).
BODY_JOINTS: dict[int, str] = {
    2: "left_eye",
    5: "right_eye",
    11: "left_shoulder",
    12: "right_shoulder",
    13: "left_elbow",
    14: "right_elbow",
    15: "left_wrist",
    16: "right_wrist",
    17: "left_pinky1",
    18: "right_pinky1",
    19: "left_index1",
    20: "right_index1",
    21: "left_thumb2",
    22: "right_thumb2",
    23: "left_hip",
    24: "right_hip",
    25: "left_knee",
    26: "right_knee",
    27: "left_ankle",
    28: "right_ankle",
}
BODY_LANDMARKS: dict[int, str] = {
    0: "nose",
    7: "left_ear",
    8: "right_ear",
    9: "mouth_left",
    10: "mouth_right",
    29: "left_heel",
    30: "right_heel",
    31: "left_toe",
    32: "right_toe",
}
BODY_WEIGHTS: dict[int, float] = {
    **{i: 0.5 for i in (0, 2, 5, 7, 8, 9, 10)},  # face
    **{i: 0.3 for i in range(17, 23)},  # the pose model's hand points
    23: 0.5,
    24: 0.5,  # hips: MediaPipe's sit wider and lower than hip joint centres
}

# MediaPipe Hand index -> SMPL-X hand joint suffix; 4, 8, 12, 16, 20 are fingertip landmarks.
HAND_JOINTS: dict[int, str] = {0: "wrist"} | {
    1 + 4 * f + k: f"{finger}{k + 1}" for f, finger in enumerate(FINGERS) for k in range(3)
}
HAND_LANDMARKS: dict[int, str] = {4 + 4 * f: f"{finger}_tip" for f, finger in enumerate(FINGERS)}
# Hand points that move rigidly with the wrist (wrist, thumb CMC, the four MCPs): the body
# stage fits the wrist rotation to them before the fingers are fitted.
HAND_PALM = (0, 1, 5, 9, 13, 17)

SMPLX_VERTEX_COUNT = 10475
_SMPLX_NAMES = {
    "nose": "nose",
    "left_ear": "lear",
    "right_ear": "rear",
    "left_heel": "LHeel",
    "right_heel": "RHeel",
    "left_toe": "LBigToe",
    "right_toe": "RBigToe",
} | {f"{side}_{f}_tip": f"{side[0]}{f}" for side in ("left", "right") for f in FINGERS}


@dataclass
class KeypointMap:
    """Detector keypoints -> points of a posed template.

    A posed template gives ``points = cat([joints (B, 55, 3), vertices[:, vertex_ids]], 1)``;
    keypoint k of a set is ``points[:, index[k]]`` and counts with ``weight[k]`` (0: unmapped).
    """

    vertex_ids: torch.Tensor  # (M,) long, the landmark vertices
    body_index: torch.Tensor  # (33,) long into the 55 + M points
    body_weight: torch.Tensor  # (33,)
    left_hand_index: torch.Tensor  # (21,)
    right_hand_index: torch.Tensor  # (21,)
    hand_weight: torch.Tensor  # (21,) shared by both hands

    def points(self, joints: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
        """(B, 55 + M, 3) joints then landmark vertices, from joints (B, 55, 3), vertices (B, V, 3)."""
        return torch.cat([joints, vertices[:, self.vertex_ids]], dim=1)

    def to(self, device: torch.device | str) -> KeypointMap:
        return KeypointMap(**{k: v.to(device) for k, v in vars(self).items()})


def anny_landmarks(template: BodyTemplate) -> dict[str, int]:
    """Landmark name -> vertex index on an Anny template (rules in the module docstring)."""
    model = template.model
    labels = list(model.bone_labels)
    weights, bones = model.vertex_bone_weights, model.vertex_bone_indices  # (V, 9) each
    device = weights.device

    def skinned(*names: str) -> torch.Tensor:
        """(V,) total skinning weight of each vertex on the named bones."""
        ids = torch.tensor([labels.index(n) for n in names], device=device)
        return (weights * torch.isin(bones, ids)).sum(1)

    def best(mask: torch.Tensor, score: torch.Tensor) -> int:
        return int(torch.where(mask, score, -torch.inf).argmax())

    with torch.no_grad():
        rest = template.pose_vertices(SmplxPose.zeros(1, device=device), None, None)
        vertices, joints = rest[0][0], rest[1][0]  # (V, 3), (55, 3): T-pose, SMPL-X frame
        x, y, z = vertices.unbind(1)
        head = skinned("head") > 0.9
        eye_height = joints[JOINT_NAMES.index("left_eye"), 1]
        ear_band = head & ((y - eye_height).abs() < 0.02)
        found = {"nose": best(head, z), "left_ear": best(ear_band, x), "right_ear": best(ear_band, -x)}
        for action in ("mouthSmileLeft", "mouthSmileRight"):
            expression = torch.zeros(1, template.expression_dim, device=device)
            expression[0, template.expression_labels.index(action)] = 1.0
            moved = template.pose_vertices(SmplxPose.zeros(1, device=device), None, expression)[0][0]
            corner = int((moved - vertices).norm(dim=1).argmax())
            found["mouth_left" if vertices[corner, 0] > 0 else "mouth_right"] = corner
        for side, s in (("left", "L"), ("right", "R")):
            for k, finger in enumerate(FINGERS):
                base = joints[JOINT_NAMES.index(f"{side}_{finger}3")]
                tip = skinned(f"finger{k + 1}-3.{s}") > 0.9
                found[f"{side}_{finger}_tip"] = best(tip, (vertices - base).norm(dim=1))
            toes = [b for b in labels if b.startswith("toe") and b.endswith(f".{s}")]
            found[f"{side}_toe"] = best(skinned(*toes) > 0.5, z)
            found[f"{side}_heel"] = best(skinned(f"foot.{s}") > 0.5, -z)
    return found


def template_landmarks(template: BodyTemplate) -> dict[str, int]:
    """Landmark name -> vertex index for ``template``; {} where we know none (joints only)."""
    if template.name == "anny":
        return anny_landmarks(template)
    if template.name == "smplx" and template.num_vertices == SMPLX_VERTEX_COUNT:
        from smplx.vertex_ids import vertex_ids

        return {name: vertex_ids["smplx"][key] for name, key in _SMPLX_NAMES.items()}
    return {}


_CACHE: dict[tuple[str, int], KeypointMap] = {}


def keypoint_map(template: BodyTemplate) -> KeypointMap:
    """The MediaPipe -> template map, built once per template kind and mesh, on its device."""
    key = (template.name, template.num_vertices)
    if key not in _CACHE:
        _CACHE[key] = _build(template_landmarks(template))
    return _CACHE[key].to(template.faces.device)


def _build(landmarks: dict[str, int]) -> KeypointMap:
    names = list(landmarks)

    def lookup(joints: dict[int, str], surface: dict[int, str], count: int, prefix: str = ""):
        index, found = torch.zeros(count, dtype=torch.long), torch.zeros(count)
        for k, joint in joints.items():
            index[k], found[k] = JOINT_NAMES.index(prefix + joint), 1.0
        for k, name in surface.items():
            if prefix + name in landmarks:
                index[k], found[k] = NUM_JOINTS + names.index(prefix + name), 1.0
        return index, found

    body_index, body_found = lookup(BODY_JOINTS, BODY_LANDMARKS, 33)
    body_weight = body_found * torch.tensor([BODY_WEIGHTS.get(k, 1.0) for k in range(33)])
    left, hand_found = lookup(HAND_JOINTS, HAND_LANDMARKS, 21, "left_")
    right, _ = lookup(HAND_JOINTS, HAND_LANDMARKS, 21, "right_")
    return KeypointMap(
        vertex_ids=torch.tensor([landmarks[n] for n in names], dtype=torch.long),
        body_index=body_index,
        body_weight=body_weight,
        left_hand_index=left,
        right_hand_index=right,
        hand_weight=hand_found,
    )
