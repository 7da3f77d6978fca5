"""A tiny synthetic model in the SMPL-X file format, so tests need no licensed files.

The body is a T-posed 55-joint SMPL-X skeleton with a small octahedron (6 vertices, 8 outward
triangles) around every joint. Each octahedron is skinned 0.8 to its joint and 0.2 to the
joint's parent (1.0 to the pelvis for the root's), and its pose blend shapes only react to its
own joint: rotating a joint moves exactly the octahedra of that joint and of its descendants.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ram_avatar.body.layout import JOINT_NAMES, NUM_JOINTS, PARENTS

RADIUS = 0.01  # octahedron size, metres
NUM_COMPONENTS = 400  # shape + expression components, as in SMPL-X v1.1 (300 + 100)

# Joint offsets from the parent at the T-pose (metres; +Y up, facing +Z, the body's left at +X).
# Right-side joints mirror their left twin.
_OFFSETS = {
    "pelvis": (0.0, -0.35, 0.01),
    "left_hip": (0.06, -0.09, 0.0),
    "spine1": (0.0, 0.11, -0.01),
    "left_knee": (0.04, -0.38, 0.0),
    "spine2": (0.0, 0.13, 0.0),
    "left_ankle": (0.0, -0.40, -0.04),
    "spine3": (0.0, 0.05, 0.02),
    "left_foot": (0.02, -0.05, 0.12),
    "neck": (0.0, 0.22, -0.03),
    "left_collar": (0.07, 0.11, -0.01),
    "head": (0.0, 0.09, 0.05),
    "left_shoulder": (0.1, 0.03, 0.0),
    "left_elbow": (0.26, 0.0, -0.01),
    "left_wrist": (0.25, 0.0, 0.0),
    "jaw": (0.0, -0.02, 0.05),
    "left_eye": (0.03, 0.06, 0.08),
}
_FINGER_ROOTS = {  # from the wrist
    "index": (0.09, 0.0, 0.025),
    "middle": (0.095, 0.0, 0.0),
    "pinky": (0.08, 0.0, -0.04),
    "ring": (0.09, 0.0, -0.02),
    "thumb": (0.03, -0.01, 0.03),
}


def t_pose_joints() -> np.ndarray:
    """(55, 3) joint positions of the synthetic T-pose."""
    joints = np.zeros((NUM_JOINTS, 3))
    for j, name in enumerate(JOINT_NAMES):
        side, _, part = name.partition("_")
        if side == "right":
            offset = np.array(_offset("left_" + part)) * (-1, 1, 1)
        else:
            offset = np.array(_offset(name))
        joints[j] = offset + (joints[PARENTS[j]] if PARENTS[j] >= 0 else 0)
    return joints


def _offset(name: str) -> tuple[float, float, float]:
    if name in _OFFSETS:
        return _OFFSETS[name]
    finger, segment = name.removeprefix("left_")[:-1], name[-1]  # e.g. "index", "2"
    if segment == "1":
        return _FINGER_ROOTS[finger]
    return (0.025, 0.0, 0.02) if finger == "thumb" else (0.03, 0.0, 0.0)


def _octahedron() -> tuple[np.ndarray, np.ndarray]:
    """Unit octahedron: vertices (6, 3) = +-x, +-y, +-z and 8 counter-clockwise triangles."""
    vertices = np.concatenate([np.eye(3), -np.eye(3)])[[0, 3, 1, 4, 2, 5]]
    faces = []
    for sx in (0, 1):
        for sy in (0, 1):
            for sz in (0, 1):
                tri = [sx, 2 + sy, 4 + sz]  # 0/1 = +x/-x, 2/3 = +y/-y, 4/5 = +z/-z
                faces.append(tri if (sx + sy + sz) % 2 == 0 else tri[::-1])
    return vertices, np.array(faces)


def synthetic_smplx_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays of a valid SMPL-X npz (V = 330 vertices, F = 440 triangles), UVs included."""
    rng = np.random.default_rng(seed)
    joints = t_pose_joints()
    unit_vertices, unit_faces = _octahedron()
    per_joint = len(unit_vertices)
    owner = np.repeat(np.arange(NUM_JOINTS), per_joint)  # (V,) the joint of each vertex
    v_template = (joints[:, None] + RADIUS * unit_vertices).reshape(-1, 3)  # (V, 3)
    faces = (np.arange(NUM_JOINTS)[:, None, None] * per_joint + unit_faces).reshape(-1, 3)
    V, F = len(v_template), len(faces)

    weights = np.zeros((V, NUM_JOINTS))
    for v, j in enumerate(owner):
        weights[v, j] += 0.8 if j else 1.0
        weights[v, max(PARENTS[j], 0)] += 0.2 if j else 0.0
    J_regressor = (owner[None] == np.arange(NUM_JOINTS)[:, None]) / per_joint  # (55, V)

    posedirs = np.zeros((V, 3, (NUM_JOINTS - 1) * 9))
    for v, j in enumerate(owner):
        if j:  # the 9 pose features of joint j are (R_j - I), at columns 9 (j - 1) ..
            posedirs[v, :, 9 * (j - 1) : 9 * j] = 0.002 * rng.standard_normal((3, 9))

    corners = 3 * F  # a UV seam everywhere: every triangle corner has its own UV
    return {
        "v_template": v_template.astype(np.float32),
        "f": faces.astype(np.uint32),
        "shapedirs": (0.01 * rng.standard_normal((V, 3, NUM_COMPONENTS))).astype(np.float32),
        "posedirs": posedirs.astype(np.float32),
        "J_regressor": J_regressor.astype(np.float32),
        "kintree_table": np.array([[2**32 - 1, *PARENTS[1:]], range(NUM_JOINTS)], dtype=np.int64),
        "weights": weights.astype(np.float32),
        # Non-zero hand means, like the official curled hands: flat_hand_mean must ignore them.
        "hands_componentsl": np.eye(45, dtype=np.float32),
        "hands_componentsr": np.eye(45, dtype=np.float32),
        "hands_meanl": (0.3 * rng.standard_normal(45)).astype(np.float32),
        "hands_meanr": (0.3 * rng.standard_normal(45)).astype(np.float32),
        "lmk_faces_idx": rng.integers(0, F, 51),
        "lmk_bary_coords": rng.dirichlet(np.ones(3), 51).astype(np.float32),
        "vt": rng.uniform(0, 1, (corners, 2)).astype(np.float32),
        "ft": np.arange(corners).reshape(F, 3),
    }


def write_uv_obj(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """An OBJ like the official smplx_uv.obj: ``v``, ``vt`` and ``f v/vt`` lines (1-based)."""
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in arrays["v_template"]]
    lines += [f"vt {u:.7f} {v:.7f}" for u, v in arrays["vt"]]
    lines += [
        "f " + " ".join(f"{v + 1}/{t + 1}" for v, t in zip(face, uv_face))
        for face, uv_face in zip(arrays["f"], arrays["ft"])
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_synthetic_smplx(
    folder: str | Path, with_uv: bool = True, uv_obj: bool = False, gender: str = "neutral"
) -> Path:
    """Write ``SMPLX_<GENDER>.npz`` into ``folder`` (created); returns its path.

    Args:
        with_uv: give the model UVs; False writes no ``vt`` / ``ft`` and no OBJ.
        uv_obj: put the UVs in a ``smplx_uv.obj`` next to the npz instead of in it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = synthetic_smplx_arrays()
    if with_uv and uv_obj:
        write_uv_obj(folder / "smplx_uv.obj", arrays)
    if not with_uv or uv_obj:
        del arrays["vt"], arrays["ft"]
    path = folder / f"SMPLX_{gender.upper()}.npz"
    np.savez(path, **arrays)
    return path
