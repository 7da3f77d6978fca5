"""Tracking, first stages: decoding, MediaPipe detection, person masks and crops.

Clips made here are drawn (gradients, noise, marker squares); real people come only from
``../shared/data`` and are never written into the repository.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from ram_avatar.data.format import KEYPOINT_ARRAYS, check_arrays
from ram_avatar.tracking import (
    TrackingError,
    VideoStream,
    crop_image,
    crop_intrinsics,
    crop_points,
    detect_clip,
    frame_ranges,
    guided_filter,
    paste_back,
    probe_video,
    read_video,
    rotate_frame,
    smooth_boxes,
    source_intrinsics,
)
from ram_avatar.tracking.detect import find_switches

DANCER = "video/tfjs_synthetic_dance_static_576.mp4"  # synthetic, faces the camera
CAM01 = "video/pose2sim_single_cam01_static_1p67s.mp4"  # faces the camera, bystander behind
CAM02 = "video/pose2sim_single_cam02_static_1p67s.mp4"  # VP9
LAB_TWO = "video/multi_person/pose2sim_multi_cam01_two_people_static.mp4"
PARK_TWO = "video/multi_person/sports2d_demo_two_people_static.mp4"
L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST = 11, 12, 15, 16  # mediapipe-pose-33


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 30, rotation: int = 0, faststart: bool = False) -> Path:
    """Encode RGB frames (even sizes) as H.264 mp4, with a display rotation if asked, and the
    index at the start (faststart) instead of the end if asked."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def drawn_frames(count: int, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """Gradients with noise: plenty of texture, nobody in them."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x, y, (x + y) // 2], axis=-1) * (255 / size)
    return [np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8) for _ in range(count)]


def detect_quietly(path: Path, **kwargs):
    """detect_clip, returning the warnings it gave too."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = detect_clip(path, progress=False, **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


# ---------------------------------------------------------------------------------- decoding


def test_vp9_clip_decodes_and_resamples_by_picking_frames(shared_data):
    info = probe_video(shared_data / CAM02)
    assert (info.codec, info.size, info.fps, info.rotation) == ("vp9", (1920, 1080), 60.0, 0)
    video = read_video(shared_data / CAM02, max_frames=12, fps=30)
    assert video.frames.shape == (12, 1920, 1080, 3) and video.frames.dtype == np.uint8
    assert video.fps == 30 and video.frame_indices.tolist() == list(range(0, 24, 2))
    assert video.frames.std() > 20  # real content, not a blank decode
    stream = VideoStream(shared_data / CAM02, max_frames=2, max_side=480)
    assert stream.size == (480, 270) and [f.shape for _, f in stream] == [(480, 270, 3)] * 2


def test_resampling_picks_the_nearest_frames(tmp_path):
    clip = write_clip(tmp_path / "ramp.mp4", drawn_frames(30, 64), fps=30)
    video = read_video(clip, fps=12)
    assert video.fps == 12 and len(video.frame_indices) == 12
    # output frame k is at k / 12 s, i.e. source frame 2.5 k: never more than half a frame off
    assert np.abs(video.frame_indices - 2.5 * np.arange(12)).max() <= 0.5
    assert read_video(clip, fps=100).frame_indices.tolist() == list(range(30))  # no repeats


def test_rotation_metadata_is_applied(tmp_path):
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:8, :8] = 255  # marker in the stored top-left corner
    # A phone held upright stores landscape frames shown turned 90 degrees clockwise (-90).
    clip = write_clip(tmp_path / "portrait.mp4", [stored] * 12, rotation=-90)
    video = read_video(clip)
    assert video.rotation == 270 and video.source_size == (64, 32)
    assert video.frames.shape == (12, 64, 32, 3)
    marker = np.argwhere(video.frames[0, ..., 0] > 128)
    assert marker[:, 0].max() < 8 and marker[:, 1].min() >= 24  # now top-right

    assert np.array_equal(rotate_frame(stored, 270), np.rot90(stored, -1))  # clockwise
    assert np.array_equal(rotate_frame(stored, 90)[-8:, :8, 0], np.full((8, 8), 255))
    assert np.array_equal(rotate_frame(stored, 0), stored)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "video file not found"),
        (b"", "the file is empty"),
        (np.random.default_rng(0).bytes(4096), "corrupt"),
        (b"not a video\n" * 100, "corrupt"),
    ],
    ids=["missing", "zero-length", "random-bytes", "text"],
)
def test_unreadable_files_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "clip.mp4"
    if content is not None:
        _write(path, content)
    with pytest.raises(TrackingError, match=message):
        read_video(path)


def test_truncated_still_and_short_clips_raise(tmp_path):
    clip = write_clip(tmp_path / "full.mp4", drawn_frames(12, 64))
    # an mp4 cut in half loses its index (written at the end)
    truncated = _write(tmp_path / "truncated.mp4", clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(TrackingError, match="truncated"):
        read_video(truncated)
    # with its index up front (faststart), the first half still decodes: a warning says so
    faststart = write_clip(tmp_path / "faststart.mp4", drawn_frames(30, 64), faststart=True)
    cut = _write(tmp_path / "cut.mp4", faststart.read_bytes()[: faststart.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"stopped after \d+ of the 30 frames"):
        assert 5 < len(read_video(cut, min_frames=1).frames) < 25
    for suffix in (".png", ".jpg"):
        image = tmp_path / f"photo{suffix}"
        cv2.imwrite(str(image), drawn_frames(1, 64)[0])
        with pytest.raises(TrackingError, match="still image"):
            read_video(image)
    short = write_clip(tmp_path / "short.mp4", drawn_frames(4, 64))
    with pytest.raises(TrackingError, match="only 4 frame"):
        read_video(short)
    with pytest.raises(TrackingError, match="raise --max-frames"):
        read_video(clip, max_frames=3)
    with pytest.raises(TrackingError, match="folder"):
        read_video(tmp_path)


# ------------------------------------------------------------------------------------- masks


def _edge_scene() -> tuple[np.ndarray, np.ndarray]:
    """A noisy guide with a sharp colour edge between x = 39 and 40, and a mask that fades from 1 to 0
    over 6 px around it (as MediaPipe's upsampled mask does)."""
    rng = np.random.default_rng(0)
    guide = np.empty((64, 80, 3), np.uint8)
    guide[:, :40] = (200, 60, 40)
    guide[:, 40:] = (30, 90, 160)
    guide = np.clip(guide + rng.integers(-6, 7, guide.shape), 0, 255).astype(np.uint8)
    blurry = np.tile(np.clip((np.arange(80) - 37) / 6, 0, 1), (64, 1)).astype(np.float32)
    return guide, 1 - blurry


def test_guided_filter_snaps_a_blurry_mask_to_the_guides_edge():
    guide, mask = _edge_scene()
    out = guided_filter(guide, mask, 2, (0.04 * 255) ** 2)
    assert out.shape == mask.shape and out.dtype == np.float32
    row = out[32]
    # At the colour edge the mask now falls much more steeply than the 6-px ramp.
    assert row[39] > 0.75 and row[40] < 0.4
    assert row[39] - row[40] > 2 * (mask[32, 39] - mask[32, 40])
    # Far from the edge, and for a flat mask, nothing moves.
    assert np.allclose(out[:, :25], mask[:, :25], atol=0.02)
    flat = np.full(mask.shape, 0.7, np.float32)
    assert np.allclose(guided_filter(guide, flat, 2, 100.0), 0.7, atol=1e-5)


# ------------------------------------------------------------------------------------- crops


def test_crop_and_paste_back_round_trip():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    for box in ([10, 20, 74, 84], [-16, 90, 48, 154]):  # inside, and over the corner
        box = np.array(box, np.float64)
        crop = crop_image(image, box, 64)  # the box is 64 px wide: an exact copy
        assert crop.shape == (64, 64, 3)
        back = paste_back(crop, box, image.shape[:2])
        x0, y0, x1, y1 = np.clip(box.astype(int), 0, [90, 120, 90, 120])
        assert np.array_equal(back[y0:y1, x0:x1], image[y0:y1, x0:x1])
        assert back.sum() == back[y0:y1, x0:x1].sum()  # nothing outside the box
    crop = crop_image(image, np.array([-16.0, 90, 48, 154]), 64)
    assert not crop[:, :16].any() and not crop[30:].any()  # outside the image: black
    assert crop_image(image, np.array([200.0, 0, 264, 64]), 32).sum() == 0


def test_crop_maps_points_and_intrinsics_consistently():
    image = np.zeros((300, 400), np.uint8)
    image[135:140, 250:255] = 255  # source square [250, 255] x [135, 140], centre (252.5, 137.5)
    box = np.array([[180.0, 80, 340, 240]])  # 160 px -> 64 px: scale 0.4
    crop = crop_image(image, box[0], 64)
    # -> crop square [28, 30] x [22, 24]: exactly pixels 28-29, rows 22-23
    assert np.array_equal(np.argwhere(crop), [[22, 28], [22, 29], [23, 28], [23, 29]])
    assert np.all(crop[22:24, 28:30] == 255)
    point = crop_points(np.array([[[252.5, 137.5, 0.9], [9.0, 9, 0]]]), box, 64)[0]
    assert np.allclose(point, [[29, 23, 0.9], [0, 0, 0]])  # undetected stays zero

    K0 = source_intrinsics((300, 400))
    assert np.allclose(K0, [[480, 0, 200], [0, 480, 150], [0, 0, 1]])
    K = crop_intrinsics(K0, box, 64)[0]
    points = np.random.default_rng(2).uniform([-1, -1, 2], [1, 1, 5], (20, 3))
    source = points @ K0.T
    source = np.concatenate([source[:, :2] / source[:, 2:], np.ones((20, 1))], axis=1)
    cropped = points @ K.T
    expected = crop_points(source[None], box, 64)[0, :, :2]
    assert np.allclose(cropped[:, :2] / cropped[:, 2:], expected)


def test_smooth_boxes_are_steady_squares():
    rng = np.random.default_rng(3)
    frames = np.arange(40)
    centre = np.stack([300 + 5 * frames, 400 + 0 * frames], 1) + rng.normal(0, 3, (40, 2))
    size = np.stack([200 + rng.normal(0, 10, 40), 500 + rng.normal(0, 20, 40)], 1)
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
    boxes[7] += 300  # a single-frame glitch
    boxes[20:23] = np.nan  # not detected
    smooth = smooth_boxes(boxes, window=7, margin=0.1)
    sides = smooth[:, 2:] - smooth[:, :2]
    assert np.all(sides == sides[0, 0]) and 540 < sides[0, 0] < 700
    assert np.array_equal(smooth, np.round(smooth))
    centres = (smooth[:, :2] + smooth[:, 2:]) / 2
    assert np.abs(centres[5:35] - np.stack([300 + 5 * frames, 400 + 0 * frames], 1)[5:35]).max() < 8
    assert np.isfinite(smooth).all()


def test_frame_ranges_and_switches():
    assert frame_ranges([12, 13, 14, 40, 77, 78]) == "12-14, 40, 77-78"
    assert frame_ranges([5]) == "5"
    walk = np.array([[10.0 * i, 0, 10 * i + 50, 100] for i in range(10)])
    walk[3] = np.nan
    walk[6:] += [400, 0, 400, 0]  # somebody else, four heights away
    assert find_switches(walk) == [6]


# --------------------------------------------------------------------------------- detection


@pytest.fixture(scope="module")
def dancer(shared_data):
    return detect_quietly(shared_data / DANCER, resolution=256, max_frames=16)


@pytest.fixture(scope="module")
def cam01(shared_data):
    return detect_quietly(shared_data / CAM01, resolution=256, max_frames=14)


def _fraction_of_visible_points_in_mask(result) -> float:
    body = result.keypoints["body"]
    visible = body[..., 2] > 0.5
    xy = np.clip(np.floor(body[..., :2]).astype(int), 0, result.masks.shape[1] - 1)
    rows = np.arange(len(body))[:, None].repeat(body.shape[1], 1)
    return float((result.masks[rows, xy[..., 1], xy[..., 0]] > 127)[visible].mean())


@pytest.mark.parametrize("clip", ["dancer", "cam01"])
def test_detect_clip_crops_masks_and_keypoints(clip, request):
    result, caught = request.getfixturevalue(clip)
    n = len(result.frame_indices)
    assert not caught  # one person (cam01's bystander is far too small to matter)
    assert result.frames.shape == (n, 256, 256, 3) and result.masks.shape == (n, 256, 256)
    assert result.found["body"].all()
    check_arrays(
        clip,
        {k: result.keypoints[k] for k in KEYPOINT_ARRAYS if k != "face_mesh"},
        KEYPOINT_ARRAYS,
        {"N": n, "Kb": 33, "Kh": 21, "Kf": 478},
    )
    assert result.keypoints["body_world"].shape == (n, 33, 3)
    assert result.keypoints["face_z"].shape == (n, 478)

    # the mask covers the person and not the scene
    assert _fraction_of_visible_points_in_mask(result) > 0.9
    area = (result.masks > 127).mean(axis=(1, 2))
    assert np.all((area > 0.05) & (area < 0.6))
    # confident keypoints lie inside the crop, undetected ones are zero
    for name in ("body", "left_hand", "right_hand", "face"):
        points = result.keypoints[name]
        sure = points[..., 2] > 0.5
        assert np.all((points[sure][:, :2] >= 0) & (points[sure][:, :2] <= 256)), name
        assert not points[points[..., 2] == 0].any(), name
    # steady square boxes of one size, K of the crop
    sides = result.crop_boxes[:, 2:] - result.crop_boxes[:, :2]
    assert np.all(sides == sides[0, 0])
    expected_K = crop_intrinsics(source_intrinsics(result.source_size), result.crop_boxes, 256)
    assert np.allclose(result.K, expected_K, rtol=1e-5)


@pytest.mark.parametrize("clip", ["dancer", "cam01"])
def test_left_and_right_are_the_subjects_own(clip, request):
    result, _ = request.getfixturevalue(clip)
    body = result.keypoints["body"]
    # both people face the camera: their left shoulder is on the image's right
    assert np.all(body[:, L_SHOULDER, 0] > body[:, R_SHOULDER, 0])
    # Holistic's hands sit on the same side's wrist of the body
    checked = 0
    for hand, own, other in (("left_hand", L_WRIST, R_WRIST), ("right_hand", R_WRIST, L_WRIST)):
        found = result.found[hand]
        wrist = result.keypoints[hand][found, 0, :2]
        assert np.all(
            np.linalg.norm(wrist - body[found, own, :2], axis=1)
            < np.linalg.norm(wrist - body[found, other, :2], axis=1)
        )
        checked += found.sum()
    assert checked > 0


def test_crops_match_their_boxes(cam01, shared_data):
    result, _ = cam01
    source = read_video(shared_data / CAM01, max_frames=1, min_frames=1).frames[0]
    box = result.crop_boxes[0]
    assert np.array_equal(result.frames[0], crop_image(source, box, 256))
    back = paste_back(result.frames[0], box, result.source_size)
    x0, y0, x1, y1 = np.clip(box.astype(int), 0, [1080, 1920, 1080, 1920])
    # 256 px stand for ~1300: pasting back gives a blurred copy of the source region
    blurred = cv2.GaussianBlur(source[y0:y1, x0:x1], (0, 0), 2.5)
    assert np.abs(back[y0:y1, x0:x1].astype(float) - blurred).mean() < 6
    assert not back[:y0].any() and not back[y1:].any()


def test_a_clip_without_people_raises(tmp_path):
    nobody = write_clip(tmp_path / "nobody.mp4", drawn_frames(12))
    with pytest.raises(TrackingError, match="no person found in any of the 12 frames"):
        detect_clip(nobody, resolution=64, progress=False)


def test_a_person_in_too_few_frames_raises(tmp_path, shared_data):
    person = read_video(shared_data / DANCER, max_frames=4, min_frames=1).frames
    frames = [cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in person]
    rarely = write_clip(tmp_path / "rarely.mp4", frames + drawn_frames(12))
    with pytest.raises(TrackingError, match="found in only 4 of 16 frames"):
        detect_clip(rarely, resolution=64, progress=False)


def test_second_person_in_the_lab_is_reported(shared_data):
    # The woman in front is tracked (the bigger person); the man behind is fully visible early on.
    with pytest.warns(UserWarning, match=r"another person of similar size is visible in frames 0-"):
        result = detect_clip(shared_data / LAB_TWO, resolution=64, max_frames=12, progress=False)
    assert len(result.multi_person_frames) >= 10


def test_passer_by_in_the_park_is_reported(shared_data):
    # A man dances on a box; from about source frame 45 a woman walks by, closer to the camera.
    # When he jumps off (~160), MediaPipe loses him and follows her until she leaves (~200).
    result, caught = detect_quietly(shared_data / PARK_TWO, resolution=64, fps=10)
    flagged = result.frame_indices[result.multi_person_frames]
    assert len(flagged) >= 10 and flagged.min() >= 40 and flagged.max() <= 180
    switches = result.frame_indices[result.switch_frames]
    assert len(switches) == 2 and 155 <= switches[0] <= 180 and 195 <= switches[1] <= 215
    assert len(caught) == 1
    assert frame_ranges(result.multi_person_frames) in caught[0]
    assert frame_ranges(result.switch_frames) in caught[0]
