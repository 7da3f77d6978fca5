"""Face tracking: the 3D face landmark mesh per frame, and Anny's facial actions fitted to it.

The paper fits FaceVerse (licensed) to get a face mesh; we keep MediaPipe's 478-point face mesh
itself, lifted to 3D in the camera frame (``face_mesh``), and fit the Anny template's 52
ARKit-named facial actions to it so that the template's face moves with the person's.

Expression fit, per frame, from distances between landmarks (so head rotation cancels out):
mouth opening and width, each eye's opening, each brow's height over its eye, each mouth
corner's distance to its eye (a smile shortens it), and the chin's sideways shift. Each is
divided by the distance between the pupils, so face size and camera distance cancel too.
The same distances are measured on the Anny mesh between vertices found from the actions
themselves (``anny_face_points``), which gives a linear model: feature change = J @ actions.
The person's neutral face is taken to be the clip's median feature vector (most frames of a
clip filmed for an avatar are close to neutral); each frame's change from it is explained by
non-negative actions in [0, 1] with a ridge term, each feature weighted by its noise level
(estimated from frame-to-frame jitter, which real expressions, lasting several frames, hardly
cause), so that small, noisy faces get small actions instead of amplified noise; then lightly
smoothed over time.
Limits: an expression held through the whole clip counts as neutral, and expressions that
change none of the distances (e.g. ``cheekPuff``, ``tongueOut``) are not recovered.
"""

from __future__ import annotations

import numpy as np
import torch

from ram_avatar.body.layout import JOINT_NAMES, SmplxPose
from ram_avatar.body.template import BodyTemplate

# MediaPipe face-mesh indices (subject's own left / right; refined mesh, 478 points).
MP = {
    "lip_upper": 13,
    "lip_lower": 14,
    "mouth_left": 291,
    "mouth_right": 61,
    "lid_upper_left": 386,
    "lid_lower_left": 374,
    "lid_upper_right": 159,
    "lid_lower_right": 145,
    "brow_left": 334,
    "brow_right": 105,
    "chin": 152,
    "cheek_left": 454,
    "cheek_right": 234,
    "pupil_left": 473,
    "pupil_right": 468,
}
FEATURES = (
    "mouth_open",
    "mouth_width",
    "eye_left",
    "eye_right",
    "brow_left",
    "brow_right",
    "corner_left",
    "corner_right",
    "chin_shift",
)
# The actions fitted: those that move the measured distances. The rest stay at zero.
ACTIONS = (
    "jawOpen",
    "jawLeft",
    "jawRight",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthPucker",
    "mouthFunnel",
    "eyeBlinkLeft",
    "eyeBlinkRight",
    "eyeWideLeft",
    "eyeWideRight",
    "browOuterUpLeft",
    "browOuterUpRight",
    "browDownLeft",
    "browDownRight",
)
RIDGE = 1.0  # an action of 1 costs as much as a misfit of one noise level in every feature
MIN_NOISE = 0.01  # floor of a feature's noise level (clean synthetic landmarks have none)


def features(points: torch.Tensor) -> torch.Tensor:
    """Expression features (..., 9) from named points: a dict-like tensor (..., 15, 3) ordered as ``MP``."""
    p = dict(zip(MP, points.unbind(-2)))
    d = lambda a, b: (p[a] - p[b]).norm(dim=-1)  # noqa: E731
    pupils = d("pupil_left", "pupil_right")
    pupil_mid = (p["pupil_left"] + p["pupil_right"]) / 2
    chin_shift = (p["chin"] - pupil_mid).unsqueeze(-2)  # sideways: along the pupils' line
    across = ((p["pupil_left"] - p["pupil_right"]) / pupils[..., None]).unsqueeze(-1)
    values = [
        d("lip_upper", "lip_lower"),
        d("mouth_left", "mouth_right"),
        d("lid_upper_left", "lid_lower_left"),
        d("lid_upper_right", "lid_lower_right"),
        d("brow_left", "pupil_left"),
        d("brow_right", "pupil_right"),
        d("mouth_left", "pupil_left"),
        d("mouth_right", "pupil_right"),
        (chin_shift @ across)[..., 0, 0],
    ]
    return torch.stack(values, dim=-1) / pupils[..., None]


def _moved_most(rest: torch.Tensor, moved: torch.Tensor, where: torch.Tensor | None = None) -> int:
    """Index of the vertex (V, 3) that moved farthest between rest and moved, among ``where``."""
    distance = (moved - rest).norm(dim=1)
    if where is not None:
        distance = torch.where(where, distance, -1.0)
    return int(distance.argmax())


def anny_face_points(template: BodyTemplate) -> dict[str, int | str]:
    """Vertex index (or joint name, for the pupils) on the Anny mesh of each ``MP`` point.

    Found from the facial actions on the T-posed default body (SMPL-X frame, facing +Z):
    an upper lid, brow or mouth corner is the vertex its action moves most (eyeBlink,
    browOuterUp, mouthSmile); the chin is the lowest midline vertex jawOpen moves; the lower lid
    is the still vertex nearest to where the blinking upper lid lands; the inner lips are the
    midline vertices at the mouth that jawOpen moves most (lower) and least-but-nearest (upper);
    the cheeks are the face's outermost vertices at the mouth corners' height. Sides are read
    from x (+x = the body's left), not from ARKit's names.
    """
    device = template.faces.device
    rest_pose = SmplxPose.zeros(1, device=device)
    labels = list(template.expression_labels)

    def posed(action: str | None) -> torch.Tensor:
        expression = torch.zeros(1, template.expression_dim, device=device)
        if action is not None:
            expression[0, labels.index(action)] = 1.0
        return template.pose_vertices(rest_pose, None, expression)[0][0]

    with torch.no_grad():
        rest = posed(None)
        x, y, z = rest.unbind(1)
        found: dict[str, int | str] = {"pupil_left": "left_eye", "pupil_right": "right_eye"}

        moves: dict[str, torch.Tensor] = {}  # side -> (V, 3) vertices of that side's blink

        def by_side(name: str, actions: tuple[str, str]) -> None:
            for action in actions:
                moved = posed(action)
                i = _moved_most(rest, moved)
                side = "left" if x[i] > 0 else "right"
                found[f"{name}_{side}"], moves[f"{name}_{side}"] = i, moved

        by_side("lid_upper", ("eyeBlinkLeft", "eyeBlinkRight"))
        by_side("brow", ("browOuterUpLeft", "browOuterUpRight"))
        by_side("mouth", ("mouthSmileLeft", "mouthSmileRight"))
        for side in ("left", "right"):
            upper, blinked = found[f"lid_upper_{side}"], moves[f"lid_upper_{side}"]
            moved = (blinked - rest).norm(dim=1)
            still_near = (moved < 0.1 * moved.max()) & ((rest - rest[upper]).norm(dim=1) < 0.025)
            landing = (rest - blinked[upper]).norm(dim=1)
            found[f"lid_lower_{side}"] = int(torch.where(still_near, landing, torch.inf).argmin())
        corners_y = (y[found["mouth_left"]] + y[found["mouth_right"]]) / 2
        band = ((y - corners_y).abs() < 0.01) & (x.abs() < 0.15) & (z > 0)  # the head, not the arms
        found["cheek_left"] = int(torch.where(band, x, -torch.inf).argmax())
        found["cheek_right"] = int(torch.where(band, -x, -torch.inf).argmax())
        moved = (posed("jawOpen") - rest).norm(dim=1)
        midline = x.abs() < 0.003
        found["chin"] = int(torch.where(midline & (moved > 0.5 * moved.max()), -y, -torch.inf).argmax())
        mouth = midline & ((y - corners_y).abs() < 0.02) & (z > rest[found["mouth_left"], 2])
        lower = int(torch.where(mouth & (y <= corners_y + 0.003), moved, -1.0).argmax())
        upper_candidates = mouth & (moved < 0.3 * moved[lower]) & (y >= y[lower])
        upper = int(torch.where(upper_candidates, (rest - rest[lower]).norm(dim=1), torch.inf).argmin())
        found["lip_upper"], found["lip_lower"] = upper, lower
    return found


def _anny_points(template: BodyTemplate, points: dict[str, int | str], expression: torch.Tensor) -> torch.Tensor:
    """The ``MP``-ordered points (B, 15, 3) of the rest-posed Anny with ``expression`` (B, E)."""
    pose = SmplxPose.zeros(expression.shape[0], device=expression.device)
    vertices, joints = template.pose_vertices(pose, None, expression)
    rows = []
    for name in MP:
        where = points[name]
        rows.append(joints[:, JOINT_NAMES.index(where)] if isinstance(where, str) else vertices[:, where])
    return torch.stack(rows, dim=1)


def action_jacobian(template: BodyTemplate) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of Anny's neutral face (9,) and their change per unit of each of ``ACTIONS`` (9, A)."""
    device = template.faces.device
    points = anny_face_points(template)
    labels = list(template.expression_labels)
    expression = torch.zeros(1 + len(ACTIONS), template.expression_dim, device=device)
    for k, action in enumerate(ACTIONS):
        expression[1 + k, labels.index(action)] = 1.0
    with torch.no_grad():
        f = features(_anny_points(template, points, expression).float())  # (1 + A, 9)
    return f[0], (f[1:] - f[0]).T


def lift_face_mesh(face: np.ndarray, face_z: np.ndarray, K: np.ndarray, head_depth: np.ndarray) -> np.ndarray:
    """The face landmarks in 3D, camera frame (OpenCV axes), metres: (N, 478, 3).

    Args:
        face: (N, 478, 3) ``[x, y, confidence]`` in crop pixels.
        face_z: (N, 478) MediaPipe's relative depth in crop pixels (smaller = nearer).
        K: (N, 3, 3) crop intrinsics.
        head_depth: (N,) camera z of the head (from the fitted body), metres.
    Rows without a detected face are zero.
    """
    focal = (K[:, 0, 0] + K[:, 1, 1]) / 2
    depth = head_depth[:, None] + face_z * (head_depth / focal)[:, None]  # pixels -> metres at the head
    x = (face[..., 0] - K[:, None, 0, 2]) * depth / K[:, None, 0, 0]
    y = (face[..., 1] - K[:, None, 1, 2]) * depth / K[:, None, 1, 1]
    mesh = np.stack([x, y, depth], axis=-1)
    return (mesh * (face[..., 2:] > 0)).astype(np.float32)


def fit_expressions(
    template: BodyTemplate, face_mesh: np.ndarray, found: np.ndarray, smooth: int = 3, iters: int = 300
) -> np.ndarray:
    """Anny facial actions (N, 52) fitted to the face meshes (N, 478, 3) (method: module docstring).

    Frames without a face (``found`` (N,) False) take their neighbours' actions; with no face in
    the whole clip, every action is zero. Templates other than Anny get zeros of their
    expression size (their expression spaces have no named actions to fit).
    """
    N = len(face_mesh)
    out = np.zeros((N, template.expression_dim), np.float32)
    if template.name != "anny" or not found.any():
        return out
    neutral, J = action_jacobian(template)  # (9,), (9, A)
    measured = features(torch.as_tensor(face_mesh[:, list(MP.values())], device=J.device).float())  # (N, 9)
    seen = measured[torch.as_tensor(found)]  # (F, 9)
    change = measured - seen.median(dim=0).values
    # Noise level per feature: robust spread of each frame's distance to its neighbours' mean
    # (a step of white noise sigma gives sigma * sqrt(1.5)).
    jitter = seen[1:-1] - (seen[:-2] + seen[2:]) / 2
    noise = 1.4826 * jitter.abs().median(dim=0).values / 1.5**0.5 if len(seen) > 2 else torch.zeros(9)
    Jw = J / noise.clamp(min=MIN_NOISE)[:, None]  # whitened: (9, A)
    # Non-negative ridge least squares per frame, [0, 1] box: projected gradient on all frames.
    A = Jw.T @ Jw + RIDGE * torch.eye(J.shape[1], device=J.device)  # (A, A)
    b = (change / noise.clamp(min=MIN_NOISE)) @ Jw  # (N, A)
    step = 1.0 / float(torch.linalg.eigvalsh(A).max())
    actions = torch.zeros_like(b)
    for _ in range(iters):
        actions = (actions - step * (actions @ A - b)).clamp(0.0, 1.0)
    actions = actions.cpu().numpy()
    frames = np.arange(N)
    actions = np.stack([np.interp(frames, frames[found], a[found]) for a in actions.T], axis=1)
    if smooth > 1:  # a short moving average: landmarks jitter more than faces move
        kernel = np.ones(smooth) / smooth
        padded = np.pad(actions, ((smooth // 2, smooth - 1 - smooth // 2), (0, 0)), mode="edge")
        actions = np.stack([np.convolve(a, kernel, mode="valid") for a in padded.T], axis=1)
    labels = list(template.expression_labels)
    out[:, [labels.index(a) for a in ACTIONS]] = actions
    return out


def split_jaw(template: BodyTemplate, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move the jaw actions into a SMPL-X ``jaw_pose``, so that poses carry the jaw.

    Args:
        actions: (N, 52) Anny facial actions.
    Returns:
        jaw_pose (N, 3) axis-angle (the inverse of ``AnnyTemplate.facial_actions``'s mapping),
        and the actions with jawOpen / jawLeft / jawRight zeroed (N, 52).
    """
    labels = list(template.expression_labels)
    column = lambda name: actions[:, labels.index(name)]  # noqa: E731
    side = column("jawLeft") - column("jawRight")
    jaw = np.zeros((len(actions), 3), np.float32)
    jaw[:, 0] = column("jawOpen") * template.jaw_open_angle
    jaw[:, 1] = side * template.jaw_side_angle * (1.0 if template.jaw_left_moves_left else -1.0)
    rest = actions.copy()
    rest[:, [labels.index(n) for n in ("jawOpen", "jawLeft", "jawRight")]] = 0.0
    return jaw, rest
