"""Live pose solver against the offline tracker: pose quality, jitter, filter lag and speed.

    OMP_NUM_THREADS=1 python benchmarks/live_pose_quality.py [--detect-size 384] [--variants] [clip ...]

For each clip (default: the two shared clips below) every frame goes through MediaPipe as in
the live loop (downscaled to ``--detect-size``, landmarks in source pixels), then through:

* the live solver (:class:`ram_avatar.tracking.live_pose.LivePoseSolver`), frame by frame,
  unfiltered ("live") and One-Euro filtered ("filtered"), timed per frame;
* the offline fit (``fit_body``, Adam over all frames at once, with its temporal terms) on the
  same detections and the same camera (``source_intrinsics``): the reference.

It prints, per clip:

* 2D reprojection error: per frame, the median distance between the template's projected
  keypoints and the detections (body points with visibility > 0.5; hand points of detected
  hands), in pixels of a 256 x 256 crop around the person (the crop ``ram-avatar track`` would
  cut: the person's box over the clip plus 10% on each side); median and mean over frames;
* joint angle difference to the offline fit: geodesic angle between the local rotations, per
  joint (body) and per group, and the angle between the limbs' bone directions (which, unlike
  the local rotations, do not depend on how a twist is split between joints);
* jitter: mean frame-to-frame joint acceleration |J(t+1) - 2 J(t) + J(t-1)| of the 22 body
  joints, mm / frame^2, and the filter's lag: the shift (frames) that best aligns the filtered
  joint paths with the unfiltered ones;
* solver time per frame (ms, median and p95), and its parts.

``--variants`` adds the comparison behind the solver's design: bone directions from the world
landmarks alone (closed-form bone alignment's information), 2D points alone, both (default),
and the number of Gauss-Newton steps per frame.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's start-up log lines, not errors

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ram_avatar.body import load_template
from ram_avatar.body.layout import JOINT_NAMES, PARENTS, SmplxPose
from ram_avatar.tracking.crop import crop_intrinsics, crop_points, smooth_boxes, source_intrinsics
from ram_avatar.tracking.detect import VISIBLE, PersonDetector
from ram_avatar.tracking.filters import PoseFilter
from ram_avatar.tracking.fit import CAMERA_R, fit_body
from ram_avatar.tracking.keypoint_map import keypoint_map
from ram_avatar.tracking.live_pose import LivePoseSolver, SolverConfig
from ram_avatar.tracking.video import VideoStream

VIDEO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "video"
CLIPS = ("pose2sim_single_cam01_static_1p67s.mp4", "tfjs_synthetic_dance_static_576.mp4")
BODY = list(range(22))  # global orientation + the 21 body joints
GROUPS = {
    "root": [0],
    "spine/head": [3, 6, 9, 12, 15],
    "arms": [13, 14, 16, 17, 18, 19],
    "wrists": [20, 21],
    "legs": [1, 2, 4, 5, 7, 8, 10, 11],
    "fingers": list(range(25, 55)),
}
# Limb bones (parent -> joint) and the MediaPipe body points at their ends.
LIMBS = [JOINT_NAMES.index(f"{s}_{j}") for s in ("left", "right") for j in ("elbow", "wrist", "knee", "ankle")]
LIMB_LANDMARKS = [(a + side, b + side) for side in (0, 1) for a, b in ((11, 13), (13, 15), (23, 25), (25, 27))]


def detect(path: Path, detect_size: int) -> tuple[list, tuple[int, int], float]:
    """MediaPipe on every frame, downscaled as the live loop does: detections, (H, W), fps."""
    stream = VideoStream(path, max_side=detect_size)
    with PersonDetector(others_every=0) as detector:
        detections = [detector(np.ascontiguousarray(image), stream.info.size) for _, image in stream]
    return detections, stream.info.size, stream.fps


def solve_live(template, detections, size, fps, config=None, filter=False):
    """Poses (None: no person), expressions and per-frame timings of the live solver."""
    solver = LivePoseSolver(template, size, filter=filter, config=config)
    poses, expressions, timings = [], [], []
    for i, detection in enumerate(detections):
        pose = solver(detection, i / fps)
        poses.append(pose)
        expressions.append(solver.expression if pose is not None else None)
        if pose is not None:
            timings.append(solver.timings)
    return poses, expressions, timings


def fit_offline(template, detections, size, boxes: np.ndarray) -> SmplxPose:
    """``fit_body`` on the clip's detections as ``ram-avatar track`` runs it: keypoints in 512 px
    crops (``boxes``: the smoothed person boxes), the crops' intrinsics from ``source_intrinsics``
    (so the poses are in the live solver's camera frame)."""
    resolution = 512
    keypoints = {
        k: crop_points(np.stack([getattr(d, k) for d in detections]), boxes, resolution).astype(np.float32)
        for k in ("body", "left_hand", "right_hand")
    }
    K = crop_intrinsics(source_intrinsics(size), boxes, resolution)
    return fit_body(template, keypoints, K, resolution, progress=False).pose


def stack(poses: list) -> tuple[SmplxPose, np.ndarray]:
    """The found frames' poses as one batch, and the frames' indices."""
    found = np.array([i for i, p in enumerate(poses) if p is not None])
    full = torch.cat([poses[i].full() for i in found])
    return SmplxPose.from_full(full, torch.cat([poses[i].transl for i in found])), found


@torch.no_grad()
def project(template, pose: SmplxPose, size) -> tuple[np.ndarray, np.ndarray]:
    """Joints (N, 55, 3) and the keypoint map's points in pixels (N, 55 + M, 2)."""
    kmap = keypoint_map(template)
    vertices, joints = template.pose_vertices(pose, None, None)
    cam = kmap.points(joints, vertices) @ CAMERA_R.T
    K = torch.as_tensor(source_intrinsics(size), dtype=torch.float32)
    uv = cam[..., :2] / cam[..., 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    return joints.numpy(), uv.numpy()


def reprojection(template, pose, frames, detections, size, to_256) -> dict[str, np.ndarray]:
    """Per-frame median reprojection errors (px at 256), body and hands (NaN: nothing detected)."""
    kmap = keypoint_map(template)
    _, uv = project(template, pose, size)
    body, hands = [], []
    for row, i in enumerate(frames):
        d = detections[i]
        keep = (d.body[:, 2] > VISIBLE) & (kmap.body_weight.numpy() > 0)
        body.append(np.median(np.linalg.norm(uv[row, kmap.body_index[keep]] - d.body[keep, :2], axis=1)))
        errors = [
            np.linalg.norm(uv[row, index] - h[:, :2], axis=1)
            for h, index in ((d.left_hand, kmap.left_hand_index), (d.right_hand, kmap.right_hand_index))
            if h[0, 2] > 0
        ]
        hands.append(np.median(np.concatenate(errors)) if errors else np.nan)
    return {"body": np.array(body) * to_256, "hands": np.array(hands) * to_256}


def angles(a: SmplxPose, b: SmplxPose) -> np.ndarray:
    """(N, 55) geodesic angle (degrees) between the local rotations of two pose batches."""
    ra = Rotation.from_rotvec(a.full().reshape(-1, 3).double().numpy())
    rb = Rotation.from_rotvec(b.full().reshape(-1, 3).double().numpy())
    return np.degrees((ra.inv() * rb).magnitude()).reshape(-1, 55)


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (degrees) between vectors along the last axis."""
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def bone_angles(ja: np.ndarray, jb: np.ndarray) -> np.ndarray:
    """(N, L) angle (degrees) between the limb bones (parent -> joint, ``LIMBS``) of two joint sets."""
    parents = [PARENTS[j] for j in LIMBS]
    return angle_between(ja[:, LIMBS] - ja[:, parents], jb[:, LIMBS] - jb[:, parents])


def world_angles(joints: np.ndarray, frames: np.ndarray, detections) -> np.ndarray:
    """(N, L) angle (degrees) between the limb bones and MediaPipe's world-landmark directions
    (camera axes) where both ends are visible, NaN elsewhere: how well they agree in depth."""
    parents = [PARENTS[j] for j in LIMBS]
    model = (joints[:, LIMBS] - joints[:, parents]) @ CAMERA_R.numpy().T  # (N, L, 3) camera axes
    starts, ends = zip(*LIMB_LANDMARKS)
    world = np.stack([detections[i].body_world for i in frames]).astype(np.float64)
    visible = np.stack([detections[i].body[:, 2] for i in frames])
    seen = (visible[:, list(starts)] > VISIBLE) & (visible[:, list(ends)] > VISIBLE)
    return np.where(seen, angle_between(model, world[:, list(ends)] - world[:, list(starts)]), np.nan)


def jitter(joints: np.ndarray, frames: np.ndarray) -> float:
    """Mean |J(t+1) - 2 J(t) + J(t-1)| of the body joints over consecutive found frames, mm."""
    t = np.nonzero((frames[2:] - frames[:-2]) == 2)[0] + 1
    acc = joints[t + 1][:, BODY] - 2 * joints[t][:, BODY] + joints[t - 1][:, BODY]
    return float(1000 * np.linalg.norm(acc, axis=-1).mean())


def lag(filtered: np.ndarray, raw: np.ndarray, max_shift: int = 8) -> float:
    """The delay (frames, to a tenth) that best aligns the filtered joint paths with the raw ones."""
    shifts = np.arange(0, max_shift + 0.01, 0.1)
    t = np.arange(max_shift, len(raw))
    errors = []
    for s in shifts:  # raw delayed by s frames, linearly interpolated
        lo, w = np.floor(t - s).astype(int), (t - s) % 1
        delayed = raw[lo] * (1 - w)[:, None, None] + raw[np.minimum(lo + 1, len(raw) - 1)] * w[:, None, None]
        errors.append(np.square(filtered[t] - delayed).mean())
    return float(shifts[int(np.argmin(errors))])


def summary(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    return f"{np.median(values):6.2f} {values.mean():6.2f}" if len(values) else "     -      -"


def quality(template, poses, offline, offline_joints, detections, size, to_256) -> dict:
    """Reprojection, angles to the offline fit and joints of a live run."""
    pose, frames = stack(poses)
    joints, _ = project(template, pose, size)
    return {
        "pose": pose,
        "frames": frames,
        "joints": joints,
        "reprojection": reprojection(template, pose, frames, detections, size, to_256),
        "angles": angles(pose, offline[frames]),
        "bones": bone_angles(joints, offline_joints[frames]),
        "world": world_angles(joints, frames, detections),
    }


def counts(detections) -> str:
    found = lambda part: sum(getattr(d, part)[0, 2] > 0 for d in detections)  # noqa: E731
    return (
        f"person found in {sum(d.found for d in detections)}, hands in {found('left_hand')} (left) / "
        f"{found('right_hand')} (right), face in {found('face')}"
    )


def run_clip(template, path: Path, detect_size: int, variants: bool) -> None:
    start = time.perf_counter()
    detections, size, fps = detect(path, detect_size)
    detect_ms = 1000 * (time.perf_counter() - start) / len(detections)
    boxes = np.array([d.box if d.found else np.full(4, np.nan) for d in detections])
    boxes = smooth_boxes(boxes, window=max(1, round(0.2 * fps)), margin=0.1)  # as detect_clip's crops
    side = float(boxes[0, 2] - boxes[0, 0])
    to_256 = 256.0 / side
    print(
        f"\n== {path.name}: {len(detections)} frames, {size[1]}x{size[0]} at {fps:g} fps; {counts(detections)}; "
        f"detection {detect_ms:.0f} ms/frame at {detect_size} px; the person's crop is {side:.0f} px"
    )

    start = time.perf_counter()
    offline = fit_offline(template, detections, size, boxes)
    print(f"offline fit_body: {time.perf_counter() - start:.0f} s")
    offline_joints, _ = project(template, offline, size)
    frames = np.arange(len(detections))
    reference = {
        "pose": offline,
        "joints": offline_joints,
        "frames": frames,
        "reprojection": reprojection(template, offline, frames, detections, size, to_256),
        "world": world_angles(offline_joints, frames, detections),
    }
    runs = {}
    for name, filter in (("live", False), ("live + filter", True)):
        poses, _, timings = solve_live(template, detections, size, fps, filter=filter)
        runs[name] = quality(template, poses, offline, offline_joints, detections, size, to_256)
    report(runs, reference, fps)
    parts = {k: np.array([t[k] for t in timings]) for k in timings[0]}  # the filtered run's, as live
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(
        f"\nsolver time per frame, ms (OMP_NUM_THREADS={threads}), median / p95: "
        + ", ".join(f"{k} {np.median(v):.2f} / {np.percentile(v, 95):.2f}" for k, v in parts.items())
    )
    if variants:
        report_variants(template, detections, size, fps, offline, offline_joints, to_256)


def report(runs: dict[str, dict], reference: dict, fps: float) -> None:
    """Print the quality tables of the live runs against the offline reference."""
    print("\nreprojection error, px at 256 (median, mean over frames)   body            hands")
    for name, q in ({"offline fit_body": reference} | runs).items():
        print(f"  {name:<58s}{summary(q['reprojection']['body'])}   {summary(q['reprojection']['hands'])}")
    print("\nlimb bones against MediaPipe's world landmarks (depth agreement), degrees (median, mean)")
    for name, q in ({"offline fit_body": reference} | runs).items():
        print(f"  {name:<58s}{summary(q['world'].reshape(-1))}")
    print("\nangle to the offline fit, degrees (median, mean over frames and joints)")
    print(f"  {'':<20s}" + "".join(f"{g:>15s}" for g in GROUPS) + "    limb bones")
    for name, q in runs.items():
        cells = "".join(f"{summary(q['angles'][:, joints].reshape(-1)):>15s}" for joints in GROUPS.values())
        print(f"  {name:<20s}{cells}  {summary(q['bones'].reshape(-1))}")
    per_joint = np.median(runs["live"]["angles"][:, BODY], axis=0)
    print("  per joint (live, median): " + ", ".join(f"{JOINT_NAMES[j]} {a:.0f}" for j, a in zip(BODY, per_joint)))

    raw, filtered = runs["live"], runs["live + filter"]
    whole = len(raw["frames"]) == len(reference["frames"])  # the lag needs every frame
    delay = lag(filtered["joints"], raw["joints"]) if whole else float("nan")
    jitters = ", ".join(
        f"{name} {jitter(q['joints'], q['frames']):.2f}" for name, q in (runs | {"offline": reference}).items()
    )
    print(
        f"\njitter, mean |joint acceleration| of the body joints, mm / frame^2 at {fps:g} fps: {jitters}"
        f"; filter lag on this clip {delay:.1f} frames ({1000 * delay / fps:.0f} ms), "
        f"on a slow drift {PoseFilter().rotation.lag(fps):.1f} frames"
    )


def report_variants(template, detections, size, fps, offline, offline_joints, to_256) -> None:
    """Print the solver variants' medians (unfiltered): the measurements behind its design."""
    print(
        "\nvariants (unfiltered), medians       body px@256  to offline: angles  limb bones  limbs to MP 3D  "
        "jitter mm  ms"
    )
    base = SolverConfig()
    configs = {
        "world-landmark bone directions only": replace(base, keypoints_2d=0.0, world_3d=1.0),
        "2D keypoints only": replace(base, world_3d=0.0),
        "both (default)": base,
    } | {f"both, {n} body step(s) per frame": replace(base, body_iters=n) for n in (1, 3, 5)}
    for name, config in configs.items():
        poses, _, times = solve_live(template, detections, size, fps, config=config)
        q = quality(template, poses, offline, offline_joints, detections, size, to_256)
        cells = (
            np.median(q["reprojection"]["body"]),
            np.median(q["angles"][:, BODY]),
            np.median(q["bones"]),
            np.nanmedian(q["world"]),
            jitter(q["joints"], q["frames"]),
            np.median([t["total"] for t in times]),
        )
        formats = ("10.2f", "18.1f", "12.1f", "15.1f", "12.2f", "7.2f")
        print(f"  {name:<36s}" + "".join(f"{v:{f}}" for v, f in zip(cells, formats)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clips", nargs="*", help="videos (default: two shared clips)")
    parser.add_argument("--detect-size", type=int, default=384, help="longer side given to MediaPipe (the live loop's)")
    parser.add_argument("--variants", action="store_true", help="also compare solver variants")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clips = [Path(c) for c in args.clips] or [VIDEO / c for c in CLIPS]
    print(f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    template = load_template("anny")
    for clip in clips:
        run_clip(template, clip, args.detect_size, args.variants)


if __name__ == "__main__":
    main()
