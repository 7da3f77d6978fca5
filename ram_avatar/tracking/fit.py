"""Fit a body template to 2D keypoints: the "fit" stage of ``ram-avatar track``.

Input: MediaPipe keypoints in pixels of square crops (``body`` (N, 33, 3), ``left_hand`` /
``right_hand`` (N, 21, 3), each ``[x, y, confidence]``, confidence 0 = missing), per-frame crop
intrinsics K (N, 3, 3) and optional person masks. Output (``FitResult``): a SMPL-X-layout pose
per frame, one shape for the clip, the cameras, per-frame reprojection errors and loss curves.
Which template point each keypoint is: :mod:`ram_avatar.tracking.keypoint_map`.

Camera convention
-----------------
One fixed camera at the world origin looking down world -Z, world +Y up:
``R = diag(1, -1, -1)`` (what ``Camera.look_at(eye=0, target=(0, 0, -1))`` builds) and ``t = 0``
in every frame; the body moves (``global_orient`` + ``transl`` per frame) and stands in front of
the camera, at negative world z. The world is then the dataset's (+Y up, docs/subject_format.md)
as far as the real camera is level, a person facing the camera has ``global_orient`` near zero
(as motion priors expect), and no rotation is fitted near an angle of pi, where axis-angle's log
map is singular: with ``R = I`` every upright body would sit at a rotation of pi about X. Crops
that move from frame to frame are carried by the per-frame K, which is returned as given: the
focal length is not refined, because keypoints barely constrain it (on synthetic clips at 3 m, a
focal guess 30% off fits the keypoints as well as the true one, the body simply moving 30%).

Stages (Adam on all frames at once, cosine-decayed learning rates)
------------------------------------------------------------------
0. Placement: per-frame depth from the torso's pixel size and the focal guess, the pelvis under
   the detected hips, facing the camera or away from it by the shoulders' left-right order; the
   elbows, knees and fingers start slightly bent (see ``INITIAL_POSE``).
1. ``global``: orientation + translation, against the torso points (shoulders, hips).
2. ``body``: + body pose and the clip's shape, against every body point and the palm points of
   the hand detections (wrist, thumb CMC, MCPs: they set the wrist rotation).
3. ``hands``: + finger poses, against every hand point. A hand's pose is multiplied by "this
   hand is detected in this frame", so an undetected hand stays exactly at rest (flat, zero
   pose). The face is not fitted: jaw, eyes and expression stay at rest.
4. ``silhouette`` (only with ``masks``): + the mean absolute difference between the template's
   soft silhouette and the mask, at ``silhouette_size``; mostly informs the shape. Each step
   compares ``silhouette_batch`` frames spread over the clip (``silhouette_frames``), the
   keypoints of all frames still counting.
A keypoint stage ends early once its loss stops improving (``plateau_tolerance``).

Speed (what a step costs, CPU)
------------------------------
Keypoint stages need only the 55 joints and the ~19 landmark vertices: Anny poses just those
(``AnnyTemplate.pose_points``: no per-frame rest mesh, no full skinning, closed-form bone
kinematics), ~30x cheaper than the full 13,718-vertex mesh at 300 frames (a 40-frame step:
~0.08 s instead of ~0.8 s on one core). The full mesh is posed and rendered only for the
silhouette stage's batch, so that stage costs the same for any clip length (~0.1 s a step on 2 cores).

Losses (summed over frames and divided by N)
--------------------------------------------
* Reprojection: Geman-McClure ``s^2 e / (e + s^2)`` of the squared 2D error ``e`` in units of the
  crop size (``s = sigma``), weighted by detector confidence x ``keypoint_map`` weight.
* Temporal smoothness: squared velocity and acceleration of every rotation parameter and of the
  translation. A frame without detections has only these and the priors, which put it between
  its neighbours.
* Priors: squared pose magnitude (body, hands); joint limits as bounds on the axis-angle
  components (``JOINT_LIMITS``: knees and elbows bend one way, hips extend little, fingers curl
  towards the palm; a component is the angle about that axis only for rotations about one axis,
  close enough near the hinge axes these joints use); shape towards the template's default (Anny
  phenotypes are also clamped to [0, 1] after every step); log pelvis depth towards the placement
  depth (a weak hold on the scale ambiguity: a tall person far away looks like a short one close by).

Limits of keypoint fitting: a bone's depth direction is ambiguous in one view. Bends in the image
plane are recovered (synthetic clips: elbows within ~6 degrees), but a forearm or shin pointing
towards the camera fits the 2D points as well as one pointing away, and the fit can choose the
wrong one; joint limits and the bent start pose remove only some of those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ram_avatar.body.layout import JOINT_NAMES, NUM_JOINTS, SmplxPose
from ram_avatar.body.template import BodyTemplate
from ram_avatar.render import Camera, soft_silhouette
from ram_avatar.tracking.keypoint_map import HAND_PALM, KeypointMap, keypoint_map

CAMERA_R = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # world (+Y up) -> OpenCV camera (+y down)
TORSO = (11, 12, 23, 24)  # MediaPipe shoulders and hips
STAGES = ("global", "body", "hands", "silhouette")


@dataclass
class FitConfig:
    """Iterations, learning rates and loss weights (defaults tuned on synthetic Anny clips)."""

    # The silhouette stage compares 8 frames a step: 300 steps show a 120-frame clip's frames
    # about 20 times each. Measured on two real clips (#17): mask IoU 0.81 -> 0.86 and 0.83 ->
    # 0.89, body points 2.2 -> 1.7 and 2.7 -> 2.3 px, hands 1.3 -> 0.7 px, for ~23 s more (2 cores).
    iters: dict[str, int] = field(default_factory=lambda: {"global": 50, "body": 200, "hands": 60, "silhouette": 300})
    lr_rotation: float = 0.07  # radians per step (the largest, at the start of a stage)
    lr_transl: float = 0.03  # metres per step
    lr_shape: float = 0.02
    sigma: float = 0.1  # Geman-McClure scale, fraction of the crop size
    hand_weight: float = 1.0
    # Weights, relative to the reprojection term: one point off by 1% of the crop costs 1e-4.
    pose_prior: float = 1e-5  # per rad^2
    hand_prior: float = 1e-5
    limits: float = 1.0
    shape_prior: float = 1e-3
    smooth_rotation: float = 1e-4  # velocity, per (rad / frame)^2
    accel_rotation: float = 1e-3  # acceleration, per (rad / frame^2)^2
    smooth_transl: float = 1e-2  # per (m / frame)^2
    accel_transl: float = 1e-1
    depth_prior: float = 1e-4  # per (log depth)^2
    silhouette: float = 1.0  # per mean |silhouette - mask| over the pixels
    silhouette_size: int = 128
    silhouette_batch: int = 8  # frames whose silhouette a step compares (all frames' keypoints count)
    # A keypoint stage stops early once its best loss improved by less than this fraction over
    # the last ``plateau_steps`` steps (0: never). Not the silhouette stage, whose loss changes
    # with the frames each step compares.
    plateau_tolerance: float = 1e-3
    plateau_steps: int = 20


@dataclass
class FitResult:
    """A clip fitted to its keypoints (camera convention: see the module docstring)."""

    pose: SmplxPose  # batch N, world frame (+Y up), the body in front of the camera (z < 0)
    shape: torch.Tensor  # (S,) the clip's shape, template space
    expression: torch.Tensor  # (N, E) zeros: the face is not fitted here
    K: torch.Tensor  # (N, 3, 3) intrinsics, as given
    R: torch.Tensor  # (N, 3, 3) world -> camera, all diag(1, -1, -1)
    t: torch.Tensor  # (N, 3) world -> camera, all zero
    image_size: tuple[int, int]  # (H, W) of the crops
    body_error: np.ndarray  # (N,) median reprojection error (px) of detected body points; NaN: none
    left_hand_error: np.ndarray  # (N,) same for the left hand's 21 points; NaN where not detected
    right_hand_error: np.ndarray  # (N,)
    loss_curve: dict[str, np.ndarray] = field(default_factory=dict)  # stage -> (iters,) total loss

    def camera(self) -> Camera:
        return Camera(self.K, self.R, self.t, self.image_size)


def _limits() -> torch.Tensor:
    """(55, 3, 2) lower / upper bounds of each joint's axis-angle components (pi: unbounded).

    Signs in the SMPL-X T-pose (palms down, arms along +-X): hips flex (thigh forward) about -X,
    knees flex about +X, the left elbow about -Y and the right about +Y (the forearm swings
    forward), left fingers curl about -Z and right fingers about +Z (towards the palm). Twists
    stay loose; thumbs are only held by the pose prior.
    """
    bounds = torch.tensor([-math.pi, math.pi]).repeat(NUM_JOINTS, 3, 1)

    def bound(joint: str, lows: tuple[float, ...], highs: tuple[float, ...]) -> None:
        bounds[JOINT_NAMES.index(joint)] = torch.tensor([lows, highs]).T

    for side, sign in (("left", -1.0), ("right", 1.0)):
        bound(f"{side}_hip", (-2.4, -1.0, -1.6), (0.4, 1.0, 1.6))  # the thigh goes <~23 deg back
        bound(f"{side}_knee", (-0.05, -0.3, -0.3), (2.6, 0.3, 0.3))
        flex = sorted((sign * 2.6, -sign * 0.05))
        bound(f"{side}_elbow", (-1.5, flex[0], -0.4), (1.5, flex[1], 0.4))
        for finger in ("index", "middle", "ring", "pinky"):
            curl = sorted((sign * 1.8, -sign * 0.3))
            for k in (1, 2, 3):
                spread = 0.4 if k == 1 else 0.1
                bound(f"{side}_{finger}{k}", (-0.2, -spread, curl[0]), (0.2, spread, curl[1]))
    return bounds


JOINT_LIMITS = _limits()


def _initial_pose() -> torch.Tensor:
    """(55, 3) the pose every frame starts from: the T-pose with the elbows, knees and fingers a
    little bent, the only way they can bend. At a straight joint, bending changes the limb's 2D
    length only to second order, so a foreshortened forearm, shin or finger would be explained by
    tilting the whole limb, or by bending the joint the wrong way, out of reach of the true pose;
    slightly bent, the joint's flexion gets a first-order gradient."""
    full = torch.zeros(NUM_JOINTS, 3)
    for side, sign in (("left", -1.0), ("right", 1.0)):
        full[JOINT_NAMES.index(f"{side}_elbow"), 1] = sign * 0.4
        full[JOINT_NAMES.index(f"{side}_knee"), 0] = 0.2
        for finger in ("index", "middle", "ring", "pinky"):
            for k in (1, 2, 3):
                full[JOINT_NAMES.index(f"{side}_{finger}{k}"), 2] = sign * 0.2
    return full


INITIAL_POSE = SmplxPose.from_full(_initial_pose()[None], torch.zeros(1, 3))


def _as_tensor(value, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value), dtype=torch.float32, device=device)


def _robust(points: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, sigma: float, scale: float):
    """Weighted Geman-McClure reprojection loss per frame: points, target (N, K, 2), weight (N, K)."""
    e = ((points - target) / scale).square().sum(-1)  # (N, K)
    return (weight * sigma**2 * e / (e + sigma**2)).sum(1)  # (N,)


def _smoothness(x: torch.Tensor, velocity: float, acceleration: float) -> torch.Tensor:
    """Squared first and second differences over frames of x (N, ...), summed per frame-pair."""
    if x.shape[0] < 2:
        return x.new_zeros(())
    loss = velocity * (x[1:] - x[:-1]).square().sum()
    if x.shape[0] > 2:
        loss = loss + acceleration * (x[2:] - 2 * x[1:-1] + x[:-2]).square().sum()
    return loss


def _median_error(points: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> np.ndarray:
    """(N,) median pixel distance over the valid (N, K) points; NaN where a frame has none."""
    distance = (points - target).norm(dim=-1).masked_fill(~valid, math.nan)
    return distance.nanmedian(dim=1).values.cpu().numpy()


def silhouette_frames(num_frames: int, batch: int, step: int) -> torch.Tensor:
    """The frames whose silhouettes step ``step`` of the silhouette stage compares: every k-th
    frame, k = ceil(num_frames / batch), from an offset that cycles with the step, so that a
    batch spans the clip and k consecutive steps compare every frame once."""
    k = math.ceil(num_frames / batch)
    return torch.arange(step % k, num_frames, k)


class _Problem:
    """The detections, the parameters being fitted, and the loss."""

    def __init__(self, template, keypoints, K, image_size, masks, config: FitConfig):
        self.template, self.config = template, config
        device = template.faces.device
        self.map: KeypointMap = keypoint_map(template)
        self.body = _as_tensor(keypoints["body"], device)  # (N, 33, 3)
        N = self.body.shape[0]
        self.N, self.device = N, device
        self.hands = {  # (N, 21, 3) each; an absent key: never detected
            side: _as_tensor(keypoints[f"{side}_hand"], device)
            if f"{side}_hand" in keypoints
            else torch.zeros(N, 21, 3, device=device)
            for side in ("left", "right")
        }
        self.seen = {side: (h[..., 2] > 0).any(1).float() for side, h in self.hands.items()}  # (N,)
        self.torso = torch.zeros(33, device=device).index_fill_(0, torch.tensor(TORSO, device=device), 1.0)
        self.palm = torch.zeros(21, device=device).index_fill_(0, torch.tensor(HAND_PALM, device=device), 1.0)
        self.K = _as_tensor(K, device)  # (N, 3, 3)
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.scale = float(max(self.image_size))
        self.R = CAMERA_R.to(device).expand(N, 3, 3)
        self.masks = None if masks is None else self._small_masks(_as_tensor(masks, device) / 255.0)
        self.bounds = JOINT_LIMITS.to(device)

        self.default_shape = template.default_shape(1)[0].to(device)  # (S,)
        transl, yaw, self.depth0 = self._placement()
        zeros = lambda *shape: torch.zeros(*shape, device=device)  # noqa: E731
        self.params = {
            "orient": torch.stack([zeros(N), yaw, zeros(N)], dim=1),  # (N, 3)
            "transl": transl,  # (N, 3)
            "body": INITIAL_POSE.body_pose.to(device).repeat(N, 1, 1),
            "shape": self.default_shape.clone(),  # (S,)
            "left_hand": INITIAL_POSE.left_hand_pose.to(device).repeat(N, 1, 1),
            "right_hand": INITIAL_POSE.right_hand_pose.to(device).repeat(N, 1, 1),
        }

    def _small_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """(N, S, S) masks averaged down to the silhouette resolution."""
        size = self.config.silhouette_size
        return torch.nn.functional.interpolate(masks[:, None], size=(size, size), mode="area")[:, 0]

    def _placement(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Initial translation (N, 3), yaw (N,) and pelvis depth (N,) from the torso points.

        Depth: the focal length times the ratio of the default body's torso length and shoulder
        width (metres) to the detected ones (pixels), whichever ratio is smallest (foreshortening
        only shortens). Yaw: 0 (facing the camera) when the left shoulder is on the image's
        right, else pi. Frames without both shoulders and hips are interpolated in time.
        """
        rest = self.template.pose_vertices(SmplxPose.zeros(1, device=self.device), self.default_shape[None], None)
        joints = rest[1][0].detach()  # (55, 3)
        J = lambda name: joints[JOINT_NAMES.index(name)]  # noqa: E731
        torso_m = ((J("left_shoulder") + J("right_shoulder")) / 2 - (J("left_hip") + J("right_hip")) / 2).norm()
        shoulders_m = (J("left_shoulder") - J("right_shoulder")).norm()

        xy, conf = self.body[..., :2], self.body[..., 2]
        valid = (conf[:, TORSO] > 0).all(1)
        if not valid.any():
            raise ValueError("No frame shows both shoulders and both hips: cannot place the body")
        hips, shoulders = (xy[:, 23] + xy[:, 24]) / 2, (xy[:, 11] + xy[:, 12]) / 2  # (N, 2)
        px_per_m = torch.maximum(
            (shoulders - hips).norm(dim=1) / torso_m, (xy[:, 11] - xy[:, 12]).norm(dim=1) / shoulders_m
        )
        focal = (self.K[:, 0, 0] + self.K[:, 1, 1]) / 2
        facing = (xy[:, 11, 0] > xy[:, 12, 0]).float()
        frames, known = np.arange(self.N), valid.cpu().numpy()
        fill = lambda x: _as_tensor(np.interp(frames, frames[known], x[valid].cpu().numpy()), self.device)  # noqa: E731
        depth = fill(focal / px_per_m)
        u, v = fill(hips[:, 0]), fill(hips[:, 1])
        yaw = math.pi * (1 - fill(facing).round())
        pelvis_cam = (
            torch.linalg.solve(self.K, torch.stack([u, v, torch.ones_like(u)], dim=1)[..., None])[..., 0]
            * depth[:, None]
        )
        transl = pelvis_cam @ CAMERA_R.to(self.device) - J("pelvis")  # R^T x for row vectors
        return transl, yaw, depth

    def pose(self) -> SmplxPose:
        p, N = self.params, self.N
        zeros = torch.zeros(N, 3, device=self.device)
        return SmplxPose(
            global_orient=p["orient"],
            body_pose=p["body"],
            jaw_pose=zeros,
            leye_pose=zeros,
            reye_pose=zeros,
            left_hand_pose=p["left_hand"] * self.seen["left"][:, None, None],
            right_hand_pose=p["right_hand"] * self.seen["right"][:, None, None],
            transl=p["transl"],
        )

    def camera(self) -> Camera:
        return Camera(self.K, self.R, torch.zeros(self.N, 3, device=self.device), self.image_size)

    def project(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed joints (N, 55, 3) and the map's points projected to pixels (N, 55 + M, 2).

        Only the M landmark vertices are posed where the template can (Anny's ``pose_points``):
        the full mesh costs 10-30x more, with its gradients, and only the silhouette needs it.
        """
        pose, shape, ids = self.pose(), self.params["shape"][None], self.map.vertex_ids
        if hasattr(self.template, "pose_points"):
            landmarks, joints = self.template.pose_points(pose, shape, None, ids)
        else:
            vertices, joints = self.template.pose_vertices(pose, shape, None)
            landmarks = vertices[:, ids]
        return joints, self.camera().project(torch.cat([joints, landmarks], dim=1))[0]

    def terms(self, stage: str, step: int = 0) -> dict[str, torch.Tensor]:
        """The weighted loss terms of a stage at a step (scalars; their sum is minimised)."""
        c, p, m = self.config, self.params, self.map
        joints, uv = self.project()
        body_weight = self.body[..., 2] * m.body_weight * (self.torso if stage == "global" else 1.0)
        data = _robust(uv[:, m.body_index], self.body[..., :2], body_weight, c.sigma, self.scale)  # (N,)
        if stage != "global":
            use = self.palm if stage == "body" else 1.0
            for side, index in (("left", m.left_hand_index), ("right", m.right_hand_index)):
                hand = self.hands[side]
                weight = c.hand_weight * hand[..., 2] * m.hand_weight * use
                data = data + _robust(uv[:, index], hand[..., :2], weight, c.sigma, self.scale)
        N = self.N
        full = self.pose().full()  # (N, 55, 3)
        low, high = self.bounds.unbind(-1)  # (55, 3) each
        limits = (low - full).clamp(min=0).square() + (full - high).clamp(min=0).square()
        hand_pose = torch.cat([p["left_hand"], p["right_hand"]], dim=1)
        rotations = torch.cat([p["orient"][:, None], p["body"], hand_pose], dim=1)  # (N, 31, 3)
        depth = -joints[:, 0, 2]  # pelvis camera depth: the camera looks down world -Z
        terms = {
            "data": data.sum() / N,
            "pose": c.pose_prior * p["body"].square().sum() / N,
            "hand_pose": c.hand_prior * hand_pose.square().sum() / N,
            "limits": c.limits * limits.sum() / N,
            "smooth_rotation": _smoothness(rotations, c.smooth_rotation, c.accel_rotation) / N,
            "smooth_transl": _smoothness(p["transl"], c.smooth_transl, c.accel_transl) / N,
            "depth": c.depth_prior * (depth.clamp(min=1e-3).log() - self.depth0.log()).square().mean(),
            "shape": c.shape_prior * (p["shape"] - self.default_shape).square().sum(),
        }
        if stage == "silhouette":
            frames = silhouette_frames(self.N, c.silhouette_batch, step).to(self.device)
            terms["silhouette"] = c.silhouette * self._silhouette(frames)
        return terms

    def _silhouette(self, frames: torch.Tensor) -> torch.Tensor:
        """Mean absolute silhouette - mask difference over pixels and over ``frames`` (the full
        mesh of each is posed and rendered: the costly part of a step), as an estimate of the
        mean over all the frames showing a person."""
        size = (self.config.silhouette_size,) * 2
        vertices = self.template.pose_vertices(self.pose()[frames], self.params["shape"][None], None)[0]
        camera = self.camera()[frames].resize(size)
        silhouette = soft_silhouette(vertices, self.template.faces, camera, size)  # (n, S, S)
        masks = self.masks[frames]
        mismatch = (silhouette - masks).abs().mean(dim=(1, 2))  # (n,)
        has_person = (masks.flatten(1).amax(1) > 0).float()
        return (mismatch * has_person).sum() / len(frames)

    def errors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-frame median reprojection errors in pixels: body, left hand, right hand."""
        m = self.map
        with torch.no_grad():
            uv = self.project()[1]
        sets = (
            (self.body, m.body_index, m.body_weight),
            (self.hands["left"], m.left_hand_index, m.hand_weight),
            (self.hands["right"], m.right_hand_index, m.hand_weight),
        )
        body, left, right = (
            _median_error(uv[:, index], points[..., :2], (points[..., 2] > 0) & (weight > 0))
            for points, index, weight in sets
        )
        return body, left, right


# Parameters each stage fits, in the order they join. A fresh Adam moves every parameter by
# about its learning rate in its first steps, whatever the gradient: parameters already fitted
# by an earlier stage continue at ``REFINE`` times their rate, so they are not thrown off.
STAGE_PARAMS = {
    "global": ("orient", "transl"),
    "body": ("body", "shape"),
    "hands": ("left_hand", "right_hand"),
    "silhouette": ("shape",),  # the masks say most about the shape: back to its full rate
}
REFINE = 0.3


def _stage_params(stage: str, config: FitConfig) -> dict[str, float]:
    """Parameter name -> learning rate for the parameters a stage fits."""
    rates = {
        "orient": config.lr_rotation,
        "transl": config.lr_transl,
        "body": config.lr_rotation,
        "shape": config.lr_shape,
        "left_hand": config.lr_rotation,
        "right_hand": config.lr_rotation,
    }
    names = {}
    for earlier in STAGES[: STAGES.index(stage) + 1]:
        for name in STAGE_PARAMS[earlier]:
            names[name] = rates[name] * (1.0 if earlier == stage else REFINE)
    return names


def _run_stage(problem: _Problem, stage: str, iters: int, progress: bool) -> np.ndarray:
    """Adam on the stage's parameters for ``iters`` steps; returns the loss per step."""
    rates = _stage_params(stage, problem.config)
    for name, param in problem.params.items():  # no gradients for what the stage does not fit
        param.requires_grad_(name in rates)
    optimizer = torch.optim.Adam([{"params": [problem.params[n]], "lr": lr} for n, lr in rates.items()])
    clamp_shape = problem.template.name == "anny"  # Anny phenotypes live in [0, 1]
    config, curve = problem.config, []
    window = config.plateau_steps if stage != "silhouette" and config.plateau_tolerance > 0 else 0
    bar = tqdm(range(iters), desc=f"fit: {stage}", disable=not progress, leave=False)
    for step in bar:
        decay = 0.55 + 0.45 * math.cos(math.pi * step / max(iters - 1, 1))  # 1 -> 0.1
        for group, lr in zip(optimizer.param_groups, rates.values()):
            group["lr"] = lr * decay
        optimizer.zero_grad(set_to_none=True)
        loss = sum(problem.terms(stage, step).values())
        loss.backward()
        optimizer.step()
        if clamp_shape:
            with torch.no_grad():
                problem.params["shape"].clamp_(0.0, 1.0)
        curve.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{curve[-1]:.3g}")
        if window and step >= 2 * window:
            before, recent = min(curve[:-window]), min(curve[-window:])
            if before - recent < config.plateau_tolerance * recent:
                break
    return np.asarray(curve, dtype=np.float32)


def fit_body(
    template: BodyTemplate,
    keypoints: dict[str, np.ndarray | torch.Tensor],
    K: np.ndarray | torch.Tensor,
    image_size: int | tuple[int, int],
    masks: np.ndarray | torch.Tensor | None = None,
    config: FitConfig | None = None,
    max_iters: int | None = None,
    progress: bool = True,
) -> FitResult:
    """Fit ``template`` to a clip's 2D keypoints (method and conventions: module docstring).

    Args:
        template: any body template (its device is where the fit runs).
        keypoints: ``body`` (N, 33, 3) MediaPipe Pose, optional ``left_hand`` / ``right_hand``
            (N, 21, 3) MediaPipe Hand, as ``[x, y, confidence]`` in crop pixels (other keys,
            e.g. ``face``, are ignored).
        K: (N, 3, 3) crop intrinsics (the focal length may be a guess).
        image_size: crop size R, or (H, W).
        masks: optional (N, H, W) uint8 person masks (0 .. 255): enables the silhouette stage.
        config: iterations and weights; default ``FitConfig()``.
        max_iters: caps every stage's iterations (for quick tests and previews).
        progress: show a tqdm bar per stage.
    """
    config = config or FitConfig()
    problem = _Problem(template, keypoints, K, image_size, masks, config)
    stages = [s for s in STAGES if s != "silhouette" or problem.masks is not None]
    curves = {}
    for stage in stages:
        iters = config.iters[stage] if max_iters is None else min(config.iters[stage], max_iters)
        curves[stage] = _run_stage(problem, stage, iters, progress)

    body_error, left_error, right_error = problem.errors()
    p = problem.params
    camera = problem.camera()
    return FitResult(
        pose=SmplxPose(**{k: v.detach() for k, v in vars(problem.pose()).items()}),
        shape=p["shape"].detach().clone(),
        expression=torch.zeros(problem.N, template.expression_dim, device=problem.device),
        K=camera.K.detach(),
        R=camera.R.clone(),
        t=camera.t,
        image_size=problem.image_size,
        body_error=body_error,
        left_hand_error=left_error,
        right_hand_error=right_error,
        loss_curve=curves,
    )
