"""The SMPL-X reference skeleton that imported motion is retargeted onto.

Retargeting needs only the direction of every SMPL-X bone at the zero (T-)pose and a leg length
to scale root motion with. Both are measured on the default Anny body
(``load_template("anny")`` at ``SmplxPose.zeros(1)``, CC0 body data): the pose mapping of
``ram_avatar.body`` makes every template agree on these directions, so the numbers hold for
SMPL-X too (its legs are ~2 cm shorter, which changes the root motion by ~2 %).
"""

from __future__ import annotations

import math

from ram_avatar.body.layout import JOINT_NAMES

# Joint positions (metres, SMPL-X world: +Y up, facing +Z, left at +X) at the zero pose.
_LEFT = {
    "hip": (0.1023, -0.0074, -0.0039),
    "knee": (0.1023, -0.4017, -0.0039),
    "ankle": (0.1023, -0.8040, -0.0039),
    "foot": (0.1098, -0.8426, 0.1350),
    "collar": (0.0220, 0.4470, 0.0163),
    "shoulder": (0.1651, 0.4271, 0.0134),
    "elbow": (0.4177, 0.4271, 0.0134),
    "wrist": (0.6448, 0.4271, 0.0134),
    "eye": (0.0296, 0.6486, 0.1075),
    "index1": (0.7466, 0.4230, 0.0388),
    "index2": (0.7720, 0.4230, 0.0388),
    "index3": (0.7947, 0.4230, 0.0388),
    "middle1": (0.7457, 0.4271, 0.0134),
    "middle2": (0.7787, 0.4271, 0.0134),
    "middle3": (0.8057, 0.4271, 0.0134),
    "pinky1": (0.7307, 0.4230, -0.0235),
    "pinky2": (0.7517, 0.4230, -0.0235),
    "pinky3": (0.7669, 0.4230, -0.0235),
    "ring1": (0.7399, 0.4275, -0.0057),
    "ring2": (0.7690, 0.4275, -0.0057),
    "ring3": (0.7933, 0.4275, -0.0057),
    "thumb1": (0.6822, 0.4234, 0.0372),
    "thumb2": (0.6936, 0.4030, 0.0564),
    "thumb3": (0.7186, 0.3856, 0.0751),
}
_CENTRE = {
    "pelvis": (0.0, 0.0, 0.0),
    "spine1": (0.0, 0.0677, -0.0324),
    "spine2": (0.0, 0.1360, -0.0193),
    "spine3": (0.0, 0.2110, -0.0175),
    "neck": (0.0, 0.5125, -0.0056),
    "head": (0.0, 0.6093, 0.0298),
    "jaw": (0.0, 0.6050, 0.0535),
}


def _rest_positions() -> tuple[tuple[float, float, float], ...]:
    table = dict(_CENTRE)
    for name, (x, y, z) in _LEFT.items():  # the body is left/right symmetric
        table[f"left_{name}"] = (x, y, z)
        table[f"right_{name}"] = (-x, y, z)
    return tuple(table[name] for name in JOINT_NAMES)


REST_POSITIONS = _rest_positions()  # (55, 3) in JOINT_NAMES order


def _distance(a: str, b: str) -> float:
    pa, pb = REST_POSITIONS[JOINT_NAMES.index(a)], REST_POSITIONS[JOINT_NAMES.index(b)]
    return math.dist(pa, pb)


# Hip -> knee -> ankle (0.797 m): BVH root motion is scaled by this over the file's leg length.
LEG_LENGTH = _distance("left_hip", "left_knee") + _distance("left_knee", "left_ankle")
# Pelvis -> head (0.610 m), for files without legs.
TORSO_LENGTH = _distance("pelvis", "head")

# The joint each joint's bone points at (its first child along the body); leaves have none.
MAIN_CHILD: dict[str, str] = {
    "spine1": "spine2",
    "spine2": "spine3",
    "spine3": "neck",
    "neck": "head",
}
for _side in ("left", "right"):
    MAIN_CHILD |= {
        f"{_side}_hip": f"{_side}_knee",
        f"{_side}_knee": f"{_side}_ankle",
        f"{_side}_ankle": f"{_side}_foot",
        f"{_side}_collar": f"{_side}_shoulder",
        f"{_side}_shoulder": f"{_side}_elbow",
        f"{_side}_elbow": f"{_side}_wrist",
        f"{_side}_wrist": f"{_side}_middle1",
    }
    for _finger in ("thumb", "index", "middle", "ring", "pinky"):
        MAIN_CHILD[f"{_side}_{_finger}1"] = f"{_side}_{_finger}2"
        MAIN_CHILD[f"{_side}_{_finger}2"] = f"{_side}_{_finger}3"

# Directions of the leaf bones (no child joint): the head points up, feet, jaw and eyes forward.
LEAF_DIRECTION: dict[str, tuple[float, float, float]] = {
    "head": (0.0, 1.0, 0.0),
    "jaw": (0.0, -0.4, 1.0),
    "left_eye": (0.0, 0.0, 1.0),
    "right_eye": (0.0, 0.0, 1.0),
    "left_foot": (0.0, 0.0, 1.0),
    "right_foot": (0.0, 0.0, 1.0),
}
