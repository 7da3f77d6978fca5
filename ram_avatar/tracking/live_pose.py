"""Per-frame pose solving for live driving: one MediaPipe detection -> one SMPL-X-layout pose, in ms.

The offline fit (:mod:`ram_avatar.tracking.fit`) runs Adam over a whole clip for seconds;
live, each camera frame must be turned into a pose in a few milliseconds on one CPU thread.
:class:`LivePoseSolver` does it with a few Gauss-Newton steps in NumPy, warm-started from the
previous frame's solution.

Method
------
The template is reduced to its kinematic tree (rest joints of the shape, exact for Anny: its
joints are bone heads that move rigidly with their SMPL-X joint) plus the few surface points
MediaPipe marks (nose, ears, heels, toes, fingertips: each attached rigidly to the joint that
best predicts it over a few posed samples). Per frame, Levenberg-Marquardt-damped Gauss-Newton
with analytic Jacobians (rotating joint j moves a point p by ``axis x (p - J_j)``):

1. **Body** (global orientation, translation, 21 body joints): the 2D body keypoints and the
   palms of the detected hands (the offline fit's points and weights, Geman-McClure by
   reweighting, in units of the person's size in the image), plus the directions of 14 bones
   (limbs, feet, hip and shoulder lines, torso, ears) in MediaPipe's metric world landmarks,
   which are camera-aligned: they say which way a forearm or shin points in depth, which the
   2D points leave open. Before the steps, a limb that points the right way in the image but
   the wrong way in depth is swung onto its world direction (``realign``): Gauss-Newton cannot
   cross from one depth solution to its mirror image. Priors: pose size, stiffer for the joints
   the keypoints barely separate (spine, collars, toes, off-hinge elbow and knee rotation),
   and closeness to the previous frame.
2. **Hands** (15 finger joints each, separately, the wrist fixed by step 1): the hand's 21
   points in 2D and its finger directions with MediaPipe's depth relative to the wrist
   (``FrameDetection.left_hand_z``), without which a finger curled towards the camera and one
   curled away look alike.
3. **Face**: the jaw and facial actions from the face mesh, with the offline tracker's linear
   model (:mod:`ram_avatar.tracking.face`); the neutral face and the noise levels, which the
   offline tracker takes from the whole clip, come from the last ``face_window`` frames.

Joint limits are the offline fit's (``JOINT_LIMITS``), enforced by clamping after each step.
The first frame (and the first after the person was lost for ``lost_after`` seconds) starts
from a placement: the torso's 3D orientation from the world landmarks (Kabsch), its depth from
its pixel size, and the slightly bent ``INITIAL_POSE``; it gets ``cold_iters`` steps.

The camera is the offline tracker's for an unknown camera: ``source_intrinsics(image_size)``
(f = 1.2 x the longer side, centred), looking down world -Z with ``R = diag(1, -1, -1)``, t = 0;
the body's ``transl`` puts it where the person is in the frame, as ``fit_body`` does.

Why this method (``benchmarks/live_pose_quality.py --variants`` on the two shared clips, one
thread; px at 256 x 256 around the person): the world-landmark bone directions alone (what a
closed-form bone alignment uses, with the 2D points only placing the torso) reproject at
5.8-6.5 px, as MediaPipe's metric landmarks are coarser than its image ones; the 2D points
alone reproject at 1.1-1.4 px but leave limbs 16-18 degrees (median) from MediaPipe's 3D
directions, flipped in depth, and jitter up to 36% more; both together reproject at 2.1-2.2 px
with limbs within 4-5.5 degrees of the 3D directions (the offline fit, also 2D only: 5.6-7.2 px
and 12-16 degrees). Warm-started, one body step per frame already reprojects as well as five;
two are kept for fast motion and dropped frames (on the synthetic test poses two steps track
from the previous frame what two steps from a cold start cannot). The whole solve (body, both
hands, face, filter) takes 2.6-3.8 ms a frame (median; p95 3.3-4.1 ms) on one thread of a
2-core machine (3.7-4.9 ms while other jobs share it). A learned regressor would need
training poses and would still need such steps to land the body on the image.

Filtering (:class:`ram_avatar.tracking.filters.PoseFilter`) is applied to the output only:
the warm start uses the unfiltered solution, so the solver itself never lags.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ram_avatar.body.layout import JOINT_NAMES, NUM_JOINTS, PARENTS, POSE_PARTS, SmplxPose
from ram_avatar.body.template import BodyTemplate
from ram_avatar.tracking.crop import source_intrinsics
from ram_avatar.tracking.detect import FrameDetection
from ram_avatar.tracking.face import ACTIONS, MIN_NOISE, MP, RIDGE, action_jacobian, features, lift_face_mesh, split_jaw
from ram_avatar.tracking.filters import PoseFilter
from ram_avatar.tracking.fit import CAMERA_R, INITIAL_POSE, JOINT_LIMITS, TORSO
from ram_avatar.tracking.keypoint_map import HAND_PALM, keypoint_map

C = CAMERA_R.double().numpy()  # world -> camera, its own inverse
BODY_JOINTS = np.arange(22)  # global orientation + the 21 body joints
HAND_JOINTS = {"left": np.arange(25, 40), "right": np.arange(40, 55)}
# MediaPipe body points whose world-landmark directions constrain the pose: (from, to), each the
# mean of its points.
BONES = (
    ((11,), (13,)),
    ((13,), (15,)),
    ((12,), (14,)),
    ((14,), (16,)),  # arms
    ((23,), (25,)),
    ((25,), (27,)),
    ((24,), (26,)),
    ((26,), (28,)),  # legs
    ((27,), (31,)),
    ((28,), (32,)),  # feet
    ((24,), (23,)),
    ((12,), (11,)),  # hip and shoulder lines
    ((23, 24), (11, 12)),  # the torso's lean
    ((8,), (7,)),  # ears: the head's turn
)

# Limb bones that may flip in depth (a 2D point moves little when its bone turns towards or
# away from the camera): joint rotated, its child, and the MediaPipe points of the bone's ends.
LIMBS = tuple(
    (JOINT_NAMES.index(f"{side}_{joint}"), JOINT_NAMES.index(f"{side}_{child}"), a + offset, b + offset)
    for side, offset in (("left", 0), ("right", 1))
    for joint, child, a, b in (
        ("shoulder", "elbow", 11, 13),
        ("elbow", "wrist", 13, 15),
        ("hip", "knee", 23, 25),
        ("knee", "ankle", 25, 27),
    )
)
# MediaPipe hand bones moved by the finger joints: the three segments of each finger.
HAND_BONES = tuple(((1 + 4 * f + k,), (2 + 4 * f + k,)) for f in range(5) for k in range(3))


def _bone_matrix(bones, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, P) matrix taking P keypoints to the vectors of ``bones``, and (B, P) bool, the points
    each bone uses; bones using a point the template does not map (``weight`` (P,) 0) get no row."""
    rows = []
    for start, end in bones:
        row = np.zeros(len(weight))
        row[list(end)] += 1.0 / len(end)
        row[list(start)] -= 1.0 / len(start)
        if (weight[list(start + end)] > 0).all():
            rows.append(row)
    matrix = np.array(rows).reshape(-1, len(weight))
    return matrix, matrix != 0


@dataclass
class SolverConfig:
    """Iterations and weights (tuned on the shared clips: ``benchmarks/live_pose_quality.py``).

    Weights are relative to one 2D keypoint off by the person's whole size, which costs 1.
    """

    cold_iters: int = 10  # body steps on a first frame
    body_iters: int = 2  # body steps warm-started from the previous frame
    hand_iters: int = 2  # finger steps per detected hand (twice as many when it reappears)
    sigma: float = 0.1  # Geman-McClure scale, fraction of the person's (or hand's) size
    keypoints_2d: float = 1.0  # weight of the 2D points other than the torso's four
    world_3d: float = 0.01  # per squared difference of unit bone directions
    hand_3d: float = 0.01  # the same for finger bones, against the hand landmarks' depth
    # a limb further than this (degrees) from its world-landmark direction, but within 45 degrees
    # of it in the image, is first swung onto it
    realign: float = 60.0
    pose_prior: float = 1e-5  # per rad^2 of body joint rotation
    # per rad^2 of the joints the keypoints barely separate from their neighbours: the spine's
    # (the torso bends as a whole, with the pelvis), collars, toes, the elbows' sideways bend (it
    # would mimic a twisted upper arm) and the knees' sideways bend and twist
    stiff_prior: float = 1e-3
    hand_prior: float = 1e-4  # per rad^2 of finger joint rotation (units of the hand's size)
    temporal: float = 1e-3  # per rad^2 (and m^2) of change from the previous frame
    damping: float = 1e-3  # Levenberg-Marquardt: fraction of the diagonal added
    lost_after: float = 0.5  # seconds without a person after which the next frame starts cold
    hand_hold: float = 0.2  # seconds a hand keeps its last pose once not detected, then rests
    face_window: int = 90  # frames whose median face is the neutral one


def _skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = np.zeros_like(x)
    return np.stack([np.stack([o, -z, y], -1), np.stack([z, o, -x], -1), np.stack([-y, x, o], -1)], -2)


def _rodrigues(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation matrices (n, 3, 3) of axis-angle r (n, 3) and their right Jacobians (n, 3, 3):
    ``R(r + dr) = R(r) exp(J_r dr)`` to first order."""
    theta = np.linalg.norm(r, axis=1)[:, None, None]
    small = theta < 1e-4
    t = np.where(small, 1.0, theta)
    a = np.where(small, 1 - theta**2 / 6, np.sin(t) / t)
    b = np.where(small, 0.5 - theta**2 / 24, (1 - np.cos(t)) / t**2)
    c = np.where(small, 1 / 6 - theta**2 / 120, (t - np.sin(t)) / t**3)
    k = _skew(r)
    k2 = k @ k
    eye = np.eye(3)
    return eye + a * k + b * k2, eye - b * k + c * k2


def _depth_levels() -> list[tuple[np.ndarray, np.ndarray]]:
    depth = [0] * NUM_JOINTS
    for j in range(1, NUM_JOINTS):
        depth[j] = depth[PARENTS[j]] + 1
    levels = []
    for d in range(1, max(depth) + 1):
        joints = np.array([j for j in range(NUM_JOINTS) if depth[j] == d])
        levels.append((joints, np.array([PARENTS[j] for j in joints])))
    return levels


class _Skeleton:
    """The template as a kinematic tree in NumPy: rest joints and rigidly attached landmarks.

    Points are numbered as the keypoint map's: the 55 joints, then its landmark vertices.
    """

    def __init__(self, template: BodyTemplate, shape: torch.Tensor):
        kmap = keypoint_map(template)
        device = template.faces.device
        with torch.no_grad():
            vertices, joints = template.pose_vertices(SmplxPose.zeros(1, device=device), shape[None], None)
        self.rest = joints[0].double().cpu().numpy()  # (55, 3)
        parents = np.array(PARENTS)
        self.offsets = self.rest - self.rest[np.maximum(parents, 0)]
        self.levels = _depth_levels()
        ids = kmap.vertex_ids.cpu()
        rest_landmarks = vertices[0, ids].double().cpu().numpy()  # (M, 3)
        self.attach, self.local = self._attach(template, shape, ids, rest_landmarks)
        # moves[k, j]: rotating joint j moves point k (a joint moves its descendants, not itself)
        ancestors = np.zeros((NUM_JOINTS, NUM_JOINTS), bool)
        for j in range(NUM_JOINTS):
            a = PARENTS[j]
            while a >= 0:
                ancestors[j, a], a = True, PARENTS[a]
        landmark_moves = ancestors[self.attach] | (np.arange(NUM_JOINTS) == self.attach[:, None])
        self.moves = np.concatenate([ancestors, landmark_moves])  # (55 + M, 55)

    def _attach(self, template, shape, ids, rest_landmarks) -> tuple[np.ndarray, np.ndarray]:
        """Each landmark's joint (M,) and its offset in that joint's rest frame (M, 3): the joint
        whose rigid motion best predicts the landmark over a few random poses."""
        if not len(ids):
            return np.zeros(0, int), np.zeros((0, 3))
        generator = torch.Generator().manual_seed(0)
        full = 0.4 * torch.randn(4, NUM_JOINTS, 3, generator=generator, dtype=torch.float64)
        device = template.faces.device
        pose = SmplxPose.from_full(full.float(), torch.zeros(4, 3)).to(device)
        with torch.no_grad():
            vertices = template.pose_vertices(pose, shape[None], None)[0][:, ids].double().cpu().numpy()
        offsets = rest_landmarks[:, None] - self.rest[None]  # (M, 55, 3)
        error = np.zeros((len(ids), NUM_JOINTS))
        for b in range(4):
            R, _ = _rodrigues(full[b].numpy())
            G, J = self.forward(R, np.zeros(3))
            predicted = J[None] + np.einsum("jab,mjb->mja", G, offsets)
            error += np.linalg.norm(predicted - vertices[b][:, None], axis=-1)
        attach = error.argmin(1)
        return attach, offsets[np.arange(len(ids)), attach]

    def forward(self, R: np.ndarray, transl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global rotations (55, 3, 3) and positions (55, 3) from local rotations R (55, 3, 3)."""
        G, J = np.empty_like(R), np.empty((NUM_JOINTS, 3))
        G[0], J[0] = R[0], self.rest[0] + transl
        for joints, parents in self.levels:
            G[joints] = G[parents] @ R[joints]
            J[joints] = J[parents] + np.einsum("nab,nb->na", G[parents], self.offsets[joints])
        return G, J

    def points(self, G: np.ndarray, J: np.ndarray) -> np.ndarray:
        """(55 + M, 3) joints then landmarks."""
        landmarks = J[self.attach] + np.einsum("mab,mb->ma", G[self.attach], self.local)
        return np.concatenate([J, landmarks])


class _Face:
    """Jaw and facial actions of one frame, as :func:`ram_avatar.tracking.face.fit_expressions`
    does for a clip, with the neutral face and noise levels taken from recent frames; a frame
    without a face keeps the last face's."""

    def __init__(self, template: BodyTemplate, window: int):
        self.template = template
        self.enabled = template.name == "anny"
        self.history: deque[np.ndarray] = deque(maxlen=window)
        self.mp = np.array(list(MP.values()))
        if self.enabled:
            _, J = action_jacobian(template)
            self.J = J.double().cpu().numpy()  # (9, A)
            labels = list(template.expression_labels)
            self.columns = [labels.index(a) for a in ACTIONS]
        self.reset()

    def reset(self) -> None:
        self.history.clear()
        self.actions = None  # (A,) the last frame's fitted actions: the next fit's start
        self.last = np.zeros(3), np.zeros(self.template.expression_dim)  # jaw_pose, expression

    def __call__(self, detection: FrameDetection, K: np.ndarray, head_depth: float) -> tuple[np.ndarray, np.ndarray]:
        """jaw_pose (3,) and expression (E,) of the detected face."""
        if not self.enabled or not detection.face[0, 2] > 0:
            return self.last
        face, face_z = detection.face[None, self.mp], detection.face_z[None, self.mp]
        mesh = lift_face_mesh(face.astype(np.float64), face_z, K[None], np.array([head_depth]))
        measured = features(torch.from_numpy(mesh[0])).numpy()  # (9,)
        self.history.append(measured)
        seen = np.stack(self.history)
        change = measured - np.median(seen, axis=0)
        if len(seen) > 2:  # the offline noise estimate, over recent frames
            jitter = seen[1:-1] - (seen[:-2] + seen[2:]) / 2
            noise = np.maximum(1.4826 * np.median(np.abs(jitter), axis=0) / 1.5**0.5, MIN_NOISE)
        else:
            noise = np.full(len(measured), MIN_NOISE)
        Jw = self.J / noise[:, None]
        A = Jw.T @ Jw + RIDGE * np.eye(Jw.shape[1])
        b = (change / noise) @ Jw
        step = 1.0 / np.linalg.eigvalsh(A)[-1]
        actions = np.zeros(len(b)) if self.actions is None else self.actions
        for _ in range(60):  # projected gradient on the [0, 1] box, warm-started
            actions = np.clip(actions - step * (A @ actions - b), 0.0, 1.0)
        self.actions = actions
        expression = np.zeros((1, self.template.expression_dim))
        expression[0, self.columns] = actions
        jaw, expression = split_jaw(self.template, expression)
        self.last = jaw[0].astype(np.float64), expression[0]
        return self.last


def _prior_weights(config: SolverConfig) -> np.ndarray:
    """(55, 3) weight of each body rotation component's squared size (see ``SolverConfig``)."""
    prior = np.full((NUM_JOINTS, 3), config.pose_prior)
    prior[0] = 0.0  # the global orientation: the data pin it down
    stiff = ["spine1", "spine2", "spine3"] + [f"{s}_{j}" for s in ("left", "right") for j in ("collar", "foot")]
    prior[[JOINT_NAMES.index(j) for j in stiff]] = config.stiff_prior
    for side in ("left", "right"):
        prior[JOINT_NAMES.index(f"{side}_elbow"), 2] = config.stiff_prior
        prior[JOINT_NAMES.index(f"{side}_knee"), 1:] = config.stiff_prior
    return prior


def _lm_step(
    Jm: np.ndarray,
    r: np.ndarray,
    w: np.ndarray,
    x: np.ndarray,
    previous: np.ndarray,
    prior: np.ndarray,
    temporal: np.ndarray,
    damping: float,
) -> np.ndarray:
    """The damped Gauss-Newton step for parameters x of ``sum w r^2 + prior x^2 + temporal (x -
    previous)^2``, given the residuals r and their Jacobian Jm (rows of r, columns of x)."""
    H = (Jm * w[:, None]).T @ Jm
    g = Jm.T @ (w * r) + prior * x + temporal * (x - previous)
    H[np.diag_indices_from(H)] += prior + temporal + damping * np.diag(H) + 1e-12
    return -np.linalg.solve(H, g)


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (degrees) between two vectors."""
    cos = a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12)
    return math.degrees(math.acos(min(max(cos, -1.0), 1.0)))


def _robust_weights(residual: np.ndarray, sigma: float) -> np.ndarray:
    """Geman-McClure ``s^2 e / (e + s^2)`` of the squared error e, as weights for least squares."""
    e = (residual**2).sum(-1)
    return sigma**4 / (e + sigma**2) ** 2


class LivePoseSolver:
    """``solver(detection, timestamp) -> SmplxPose | None``, frame after frame of one camera.

    Args:
        template: the body template (any; Anny also gets facial actions).
        image_size: (H, W) of the frames the detections' pixel coordinates refer to.
        filter: One-Euro filter the output (:class:`PoseFilter`); the warm start is unfiltered.
        shape: (S,) the body shape (default: the template's).
        config: iterations and weights.

    After each call, ``expression`` holds the frame's facial actions (1, E) (jaw excluded: it is
    in the pose), and ``timings`` the milliseconds each part took.
    """

    def __init__(
        self,
        template: BodyTemplate,
        image_size: tuple[int, int],
        filter: bool = True,
        shape: torch.Tensor | None = None,
        config: SolverConfig | None = None,
    ):
        self.config = config or SolverConfig()
        self.image_size = tuple(int(s) for s in image_size)
        self.K = source_intrinsics(self.image_size)
        shape = template.default_shape(1)[0] if shape is None else torch.as_tensor(shape)
        self.shape = shape.to(template.faces.device)
        self.skeleton = _Skeleton(template, self.shape)
        kmap = keypoint_map(template)
        self.body_index = kmap.body_index.numpy()
        self.body_weight = kmap.body_weight.double().numpy()
        self.hand_index = {"left": kmap.left_hand_index.numpy(), "right": kmap.right_hand_index.numpy()}
        self.hand_weight = kmap.hand_weight.double().numpy()
        self.bone_matrix, self.bone_members = _bone_matrix(BONES, self.body_weight)
        self.hand_bones = _bone_matrix(HAND_BONES, self.hand_weight)[0]
        self.limits = JOINT_LIMITS.double().numpy()  # (55, 3, 2)
        self.prior = _prior_weights(self.config)
        self.initial = INITIAL_POSE.full()[0].double().numpy()  # (55, 3)
        self.face = _Face(template, self.config.face_window)
        self.filter = PoseFilter() if filter else None
        self.dtype, self.device = torch.float32, template.faces.device
        self.expression = torch.zeros(1, template.expression_dim)
        self.timings: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the previous frames: the next frame starts cold."""
        self.r: np.ndarray | None = None  # (55, 3) local axis-angle (joint 0: see self.R0)
        self.R0 = np.eye(3)  # the global orientation, kept as a matrix (no wrap at pi)
        self.transl = np.zeros(3)
        self.last_seen = -math.inf
        self.hand_seen = {"left": -math.inf, "right": -math.inf}
        self.face.reset()
        if self.filter is not None:
            self.filter.reset()

    # ------------------------------------------------------------------ per frame

    def __call__(self, detection: FrameDetection, timestamp: float) -> SmplxPose | None:
        """The pose (batch 1) of the person in ``detection``, or None if there is none.

        Args:
            detection: one frame's MediaPipe detection, in pixels of an ``image_size`` frame.
            timestamp: the frame's time in seconds (increasing; drives the filter and hand hold).
        """
        if not detection.found or not (detection.body[list(TORSO), 2] > 0).any():
            return None
        start = time.perf_counter()
        cold = self.r is None or timestamp - self.last_seen > self.config.lost_after
        if cold:
            self._place(detection)
        self._realign(detection)
        self._solve_body(detection, cold)
        body = time.perf_counter()
        for side in ("left", "right"):
            self._solve_hand(detection, side, timestamp)
        hands = time.perf_counter()
        R, _ = _rodrigues(self.r)
        R[0] = self.R0
        G, J = self.skeleton.forward(R, self.transl)
        head_depth = -J[JOINT_NAMES.index("head"), 2]  # camera z: the camera looks down world -Z
        jaw, expression = self.face(detection, self.K, head_depth)
        face = time.perf_counter()
        self.last_seen = timestamp
        full = self.r.copy()
        full[0] = Rotation.from_matrix(self.R0).as_rotvec()
        full[POSE_PARTS["jaw_pose"][0]] = jaw
        as_tensor = lambda a: torch.as_tensor(a, dtype=self.dtype, device=self.device)  # noqa: E731
        pose = SmplxPose.from_full(as_tensor(full)[None], as_tensor(self.transl)[None])
        self.expression = as_tensor(expression)[None]
        if self.filter is not None:
            pose, self.expression = self.filter(pose, self.expression, timestamp)
        end = time.perf_counter()
        parts = {"body": body - start, "hands": hands - body, "face": face - hands, "filter": end - face}
        self.timings = {k: 1000 * v for k, v in (parts | {"total": end - start}).items()}
        return pose

    def _place(self, detection: FrameDetection) -> None:
        """Cold start: torso orientation from the world landmarks, depth from the torso's size."""
        sk = self.skeleton
        torso = list(TORSO)
        model = sk.points(*sk.forward(_rodrigues(np.zeros((NUM_JOINTS, 3)))[0], np.zeros(3)))
        rest_torso = model[self.body_index[torso]]
        world = detection.body_world[torso].astype(np.float64) @ C  # MediaPipe's axes are the camera's
        a, b = rest_torso - rest_torso.mean(0), world - world.mean(0)
        u, _, vt = np.linalg.svd(b.T @ a)  # Kabsch: rotation taking a onto b
        self.R0 = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
        xy = detection.body[:, :2].astype(np.float64)
        shoulders_m = np.linalg.norm(rest_torso[0] - rest_torso[1])
        torso_m = np.linalg.norm(rest_torso[:2].mean(0) - rest_torso[2:].mean(0))
        shoulders_px = np.linalg.norm(xy[11] - xy[12])
        torso_px = np.linalg.norm(xy[[11, 12]].mean(0) - xy[[23, 24]].mean(0))
        depth = self.K[0, 0] / max(shoulders_px / shoulders_m, torso_px / torso_m, 1e-6)
        hips = xy[[23, 24]].mean(0)
        pelvis_cam = np.linalg.solve(self.K, np.array([*hips, 1.0])) * depth
        self.transl = C @ pelvis_cam - sk.rest[0]
        self.r = self.initial.copy()
        self.r[0] = 0.0

    def _realign(self, detection: FrameDetection) -> None:
        """Swing each visible limb bone that points the right way in the image but further than
        ``realign`` degrees from its world-landmark direction (the wrong way in depth) onto that
        direction, within the joint limits: the jump from one depth solution to its mirror
        image, which Gauss-Newton steps cannot make, as the 2D error grows between the two."""
        # camera -> world axes; world x, y are the image's with y flipped: the same angles in that plane
        world = detection.body_world.astype(np.float64) @ C
        visible = detection.body[:, 2] > 0.5
        _, _, G, J = self._pose()
        for joint, child, a, b in LIMBS:
            if not (visible[a] and visible[b]):
                continue
            bone, target = J[child] - J[joint], world[b] - world[a]
            if _angle(bone, target) < self.config.realign or _angle(bone[:2], target[:2]) > 45.0:
                continue
            swing = Rotation.align_vectors(target[None], bone[None])[0].as_matrix()  # bone -> target
            local = G[PARENTS[joint]].T @ swing @ G[joint]
            self.r[joint] = np.clip(Rotation.from_matrix(local).as_rotvec(), *self.limits[joint].T)
            _, _, G, J = self._pose()

    def _pose(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Local rotations, their right Jacobians, global rotations and joint positions."""
        R, Jr = _rodrigues(self.r)
        R[0], Jr[0] = self.R0, np.eye(3)  # joint 0 is updated multiplicatively: R0 exp(delta)
        G, J = self.skeleton.forward(R, self.transl)
        return R, Jr, G, J

    def _project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (K, 2) of world points (K, 3) and their derivatives (K, 2, 3)."""
        cam = points @ C.T
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        z = np.maximum(cam[:, 2], 1e-3)
        uv = np.stack([fx * cam[:, 0] / z + cx, fy * cam[:, 1] / z + cy], 1)
        d = np.zeros((len(points), 2, 3))
        d[:, 0, 0], d[:, 0, 2] = fx / z, -fx * cam[:, 0] / z**2
        d[:, 1, 1], d[:, 1, 2] = fy / z, -fy * cam[:, 1] / z**2
        return uv, d @ C

    def _point_derivatives(self, ids: np.ndarray, joints: np.ndarray, G, Jr, J, P) -> np.ndarray:
        """dP[ids] / d rotation params of ``joints``: (K, n, 3 params, 3 coordinates)."""
        axes = (G[joints] @ Jr[joints]).transpose(0, 2, 1)  # (n, 3, 3): row c = world axis of param c
        diff = P[ids][:, None] - J[joints][None]  # (K, n, 3)
        dp = np.cross(axes[None], diff[:, :, None, :])  # (K, n, 3, 3)
        return dp * self.skeleton.moves[ids][:, joints][..., None, None]

    def _solve_body(self, detection: FrameDetection, cold: bool) -> None:
        """Gauss-Newton steps on the global orientation, translation and body joints."""
        cfg = self.config
        body = detection.body.astype(np.float64)
        scale = max(float(np.linalg.norm(np.ptp(body[:, :2], axis=0))), 1.0)  # the person's size, px
        weight = body[:, 2] * self.body_weight
        weight[np.setdiff1d(np.arange(33), TORSO)] *= cfg.keypoints_2d
        ids, targets, weights = [self.body_index], [body[:, :2]], [weight]
        for side in ("left", "right"):
            hand = getattr(detection, f"{side}_hand").astype(np.float64)
            if hand[0, 2] > 0:
                ids.append(self.hand_index[side][list(HAND_PALM)])
                targets.append(hand[list(HAND_PALM), :2])
                weights.append(hand[list(HAND_PALM), 2] * cfg.keypoints_2d)
        ids, targets, weights = np.concatenate(ids), np.concatenate(targets), np.concatenate(weights)
        mp_dir = self.bone_matrix @ detection.body_world.astype(np.float64)
        mp_dir /= np.maximum(np.linalg.norm(mp_dir, axis=1, keepdims=True), 1e-9)
        bone_weight = np.repeat(cfg.world_3d * np.where(self.bone_members, body[:, 2], np.inf).min(1), 3)
        joints, n, K = BODY_JOINTS, len(BODY_JOINTS), len(ids)
        # parameters: the joints' axis-angles (joint 0's entries: unused, see _pose), translation
        prior = np.concatenate([self.prior[joints].reshape(-1), np.zeros(3)])
        temporal = np.full(3 * n + 3, 0.0 if cold else cfg.temporal)
        temporal[:3] = 0.0
        previous = np.concatenate([self.r[joints].reshape(-1), self.transl])
        low, high = self.limits[joints[1:], :, 0], self.limits[joints[1:], :, 1]
        for _ in range(cfg.cold_iters if cold else cfg.body_iters):
            _, Jr, G, J = self._pose()
            P = self.skeleton.points(G, J)
            uv, duv = self._project(P[ids])
            dp = self._point_derivatives(ids, joints, G, Jr, J, P)  # (K, n, 3, 3)
            residual = (uv - targets) / scale  # (K, 2)
            J2 = np.einsum("kxd,kjcd->kxjc", duv, dp).reshape(K, 2, 3 * n)
            J2 = np.concatenate([J2, duv], axis=2).reshape(2 * K, -1) / scale  # + translation
            Jd, rd = self._direction_rows(self.bone_matrix, P[ids[:33]], dp[:33], mp_dir)
            Jm = np.concatenate([J2, np.concatenate([Jd, np.zeros((len(rd), 3))], axis=1)])
            w = np.concatenate([np.repeat(weights * _robust_weights(residual, cfg.sigma), 2), bone_weight])
            x = np.concatenate([self.r[joints].reshape(-1), self.transl])
            r = np.concatenate([residual.reshape(-1), rd])
            step = _lm_step(Jm, r, w, x, previous, prior, temporal, cfg.damping)
            self.R0 = self.R0 @ _rodrigues(step[None, :3])[0][0]
            self.r[joints[1:]] = np.clip(self.r[joints[1:]] + step[3 : 3 * n].reshape(-1, 3), low, high)
            self.transl = self.transl + step[3 * n :]

    def _solve_hand(self, detection: FrameDetection, side: str, timestamp: float) -> None:
        """Gauss-Newton steps on one hand's finger joints (the body, wrist included, fixed)."""
        cfg = self.config
        joints = HAND_JOINTS[side]
        hand = getattr(detection, f"{side}_hand").astype(np.float64)
        new = timestamp - self.hand_seen[side] > cfg.hand_hold
        if not hand[0, 2] > 0:
            if new:
                self.r[joints] = 0.0  # unseen: flat, at rest, as the offline fit leaves it
            return
        if new:  # from slightly bent fingers, which the 2D points can bend further either way
            self.r[joints] = self.initial[joints]
        self.hand_seen[side] = timestamp
        ids, targets = self.hand_index[side], hand[:, :2]
        weights = np.repeat(hand[:, 2] * self.hand_weight, 2)
        scale = max(float(np.linalg.norm(np.ptp(hand[:, :2], axis=0))), 1.0)
        depth = getattr(detection, f"{side}_hand_z")
        if depth is not None:  # MediaPipe's finger directions in camera axes (pixels: x, y, depth)
            mp_dir = self.hand_bones @ np.concatenate([hand[:, :2], depth[:, None]], axis=1)
            mp_dir /= np.maximum(np.linalg.norm(mp_dir, axis=1, keepdims=True), 1e-9)
        n, K = len(joints), len(ids)
        prior = np.full(3 * n, cfg.hand_prior)
        temporal = np.full(3 * n, 0.0 if new else cfg.temporal)
        previous = self.r[joints].reshape(-1).copy()
        low, high = self.limits[joints, :, 0], self.limits[joints, :, 1]
        for _ in range(2 * cfg.hand_iters if new else cfg.hand_iters):
            _, Jr, G, J = self._pose()
            P = self.skeleton.points(G, J)
            uv, duv = self._project(P[ids])
            dp = self._point_derivatives(ids, joints, G, Jr, J, P)  # palm points: zero, the body's
            residual = ((uv - targets) / scale).reshape(-1)
            Jm = np.einsum("kxd,kjcd->kxjc", duv, dp).reshape(2 * K, 3 * n) / scale
            w = weights * np.repeat(_robust_weights(residual.reshape(K, 2), cfg.sigma), 2)
            if depth is not None:
                Jd, rd = self._direction_rows(self.hand_bones, P[ids], dp, mp_dir)
                Jm, residual = np.concatenate([Jm, Jd]), np.concatenate([residual, rd])
                w = np.concatenate([w, np.full(len(rd), cfg.hand_3d)])
            x = self.r[joints].reshape(-1)
            step = _lm_step(Jm, residual, w, x, previous, prior, temporal, cfg.damping)
            self.r[joints] = np.clip((x + step).reshape(n, 3), low, high)

    @staticmethod
    def _direction_rows(bones: np.ndarray, points: np.ndarray, dp: np.ndarray, target: np.ndarray):
        """Jacobian (3B, 3n) and residual (3B,) of the unit bone directions, camera axes, against
        ``target`` (B, 3): bones (B, K) over points (K, 3) whose derivatives are dp (K, n, 3, 3)."""
        vec = bones @ points @ C.T  # (B, 3)
        length = np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-9)
        unit = vec / length
        proj = (np.eye(3) - unit[:, :, None] * unit[:, None, :]) / length[:, :, None]  # d unit / d vec
        dvec = np.einsum("bk,kjcd->bjcd", bones, dp) @ C.T  # (B, n, 3, 3)
        Jd = np.einsum("bxd,bjcd->bxjc", proj, dvec).reshape(3 * len(unit), -1)
        return Jd, (unit - target).reshape(-1)
