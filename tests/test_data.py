"""Subject dataset format: round trips, lazy training items, held-out split, atomic writes, errors."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from ram_avatar.body.layout import SmplxPose
from ram_avatar.data import (
    FORMAT_VERSION,
    CameraTrack,
    ImageSequence,
    SubjectData,
    SubjectDataset,
    SubjectFormatError,
    TemplateInfo,
    load_subject,
    validate_subject,
    write_subject,
)

N, SIZE = 4, 32
PHENOTYPE = ["gender", "age", "muscle", "weight", "height", "proportions"]


def make_subject(num_frames: int = N, seed: int = 0) -> SubjectData:
    """A small valid subject: random pixels and parameters, real rotations and intrinsics."""
    rng = np.random.default_rng(seed)
    pose = {
        name: (value + rng.normal(0, 0.2, value.shape)).astype(np.float32)
        for name, value in SmplxPose.zeros(num_frames).to_numpy().items()
    }
    angles = rng.uniform(-np.pi, np.pi, num_frames)
    rotations = np.zeros((num_frames, 3, 3), np.float32)
    rotations[:, 0, 0] = rotations[:, 2, 2] = np.cos(angles)
    rotations[:, 0, 2], rotations[:, 2, 0] = np.sin(angles), -np.sin(angles)
    rotations[:, 1, 1] = 1

    def detections(points: int) -> np.ndarray:
        xy = rng.uniform(0, SIZE, (num_frames, points, 2))
        confidence = rng.uniform(0, 1, (num_frames, points, 1))
        confidence[0, :3] = 0  # some points not detected
        return np.concatenate([xy, confidence], axis=-1).astype(np.float32)

    return SubjectData(
        frames=rng.integers(0, 256, (num_frames, SIZE, SIZE, 3), dtype=np.uint8),
        masks=rng.integers(0, 256, (num_frames, SIZE, SIZE), dtype=np.uint8),
        pose=SmplxPose.from_numpy(pose),
        shape=rng.uniform(0, 1, 6).astype(np.float32),
        expression=rng.uniform(0, 1, (num_frames, 52)).astype(np.float32),
        camera=CameraTrack(
            K=np.tile(np.float32([[40, 0, 16], [0, 41, 15.5], [0, 0, 1]]), (num_frames, 1, 1)),
            R=rotations,
            t=rng.normal(0, 1, (num_frames, 3)).astype(np.float32),
            crop_boxes=np.tile(np.array([100.5, 20, 700.5, 620], np.float32), (num_frames, 1)),
        ),
        keypoints={
            "body": detections(33),
            "left_hand": detections(21),
            "right_hand": detections(21),
            "face": detections(478),
            "face_mesh": rng.normal(0, 0.1, (num_frames, 478, 3)).astype(np.float32),
        },
        template=TemplateInfo("anny", "anny-phenotype-6", "anny-arkit-52", shape_labels=PHENOTYPE),
        keypoint_layouts={
            "body": "mediapipe-pose-33",
            "hand": "mediapipe-hand-21",
            "face": "mediapipe-face-478",
        },
        fps=29.97,
        source_video="clip.mp4",
        source_size=(1080, 1920),
        frame_indices=[2 * i + 10 for i in range(num_frames)],
    )


def assert_same(actual: SubjectData, expected: SubjectData) -> None:
    np.testing.assert_array_equal(np.asarray(actual.frames), np.asarray(expected.frames))
    np.testing.assert_array_equal(np.asarray(actual.masks), np.asarray(expected.masks))
    for name, value in expected.pose.to_numpy().items():
        np.testing.assert_array_equal(actual.pose.to_numpy()[name], value)
    np.testing.assert_array_equal(actual.shape, expected.shape)
    np.testing.assert_array_equal(actual.expression, expected.expression)
    for name, value in vars(expected.camera).items():
        np.testing.assert_array_equal(getattr(actual.camera, name), value)
    assert actual.keypoints.keys() == expected.keypoints.keys()
    for name, value in expected.keypoints.items():
        np.testing.assert_array_equal(actual.keypoints[name], value)
    assert actual.template == expected.template
    assert actual.keypoint_layouts == expected.keypoint_layouts
    assert (actual.fps, actual.source_video, actual.source_size) == (
        expected.fps,
        expected.source_video,
        tuple(expected.source_size),
    )
    assert actual.frame_indices == list(expected.frame_indices)


def siblings(path: Path) -> list[str]:
    """Everything next to ``path``, hidden staging / backup folders included."""
    return sorted(os.listdir(path.parent))


@pytest.fixture
def subject_dir(tmp_path: Path) -> Path:
    return write_subject(tmp_path / "alice", make_subject())


# --- round trips ---------------------------------------------------------------------------


def test_round_trip_eager(subject_dir: Path):
    data = load_subject(subject_dir, frames="eager")
    assert isinstance(data.frames, np.ndarray) and data.frames.dtype == np.uint8
    assert data.frames.shape == (N, SIZE, SIZE, 3) and data.masks.shape == (N, SIZE, SIZE)
    assert_same(data, make_subject())


def test_round_trip_lazy_decodes_on_access(subject_dir: Path):
    data = load_subject(subject_dir)
    expected = make_subject()
    assert isinstance(data.frames, ImageSequence) and data.frames.shape == (N, SIZE, SIZE, 3)
    np.testing.assert_array_equal(data.frames[-1], expected.frames[-1])
    np.testing.assert_array_equal(data.masks[2], expected.masks[2])
    assert_same(data, expected)


def test_meta_json_is_the_documented_v1_layout(subject_dir: Path):
    meta = json.loads((subject_dir / "meta.json").read_text())
    assert meta["format"] == "ram-avatar-subject" and meta["version"] == FORMAT_VERSION == 1
    assert meta["num_frames"] == N and meta["image_size"] == [SIZE, SIZE] and meta["fps"] == 29.97
    assert meta["source"] == {
        "video": "clip.mp4",
        "size": [1080, 1920],
        "frame_indices": [10, 12, 14, 16],
    }
    assert meta["body_template"]["name"] == "anny"
    assert meta["body_template"]["shape_labels"] == PHENOTYPE
    assert meta["keypoints"]["hand"] == "mediapipe-hand-21"
    assert meta["created_by"].startswith("ram-avatar ")
    assert sorted(os.listdir(subject_dir)) == [
        "camera.npz",
        "frames",
        "keypoints.npz",
        "masks",
        "meta.json",
        "smplx.npz",
    ]
    assert sorted(os.listdir(subject_dir / "frames")) == [f"{i:06d}.png" for i in range(N)]


def test_optional_surface_offsets_round_trip_and_are_bounded(tmp_path: Path):
    data = make_subject()
    assert data.offsets is None and load_subject(write_subject(tmp_path / "plain", data)).offsets is None
    data.offsets = np.linspace(-0.02, 0.1, 50, dtype=np.float32)
    np.testing.assert_array_equal(load_subject(write_subject(tmp_path / "thick", data)).offsets, data.offsets)
    data.offsets[3] = 0.8  # 80 cm out: a bug, not clothes
    with pytest.raises(SubjectFormatError, match=r"smplx.npz: offsets must be within \+-0.5 m"):
        write_subject(tmp_path / "bad", data)


def test_optional_face_mesh_and_extra_files_are_allowed(tmp_path: Path):
    data = make_subject()
    del data.keypoints["face_mesh"]
    root = write_subject(tmp_path / "bob", data)
    (root / "fit_error.csv").write_text("frame,error\n0,0.1\n")
    assert "face_mesh" not in load_subject(root).keypoints
    validate_subject(root)


def test_rewrite_in_place_from_a_lazily_loaded_copy(subject_dir: Path):
    data = load_subject(subject_dir)
    data.fps = 25.0
    write_subject(subject_dir, data, overwrite=True)
    reloaded = load_subject(subject_dir, frames="eager")
    assert reloaded.fps == 25.0
    np.testing.assert_array_equal(reloaded.frames, make_subject().frames)
    assert siblings(subject_dir) == ["alice"]


# --- training dataset ----------------------------------------------------------------------


def test_dataset_items_have_documented_shapes_and_values(subject_dir: Path):
    dataset = SubjectDataset(subject_dir)
    expected = make_subject()
    item = dataset[1]
    assert len(dataset) == N and item["index"].item() == 1 and item["index"].dtype == torch.long
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    image = torch.from_numpy(expected.frames[1]).permute(2, 0, 1) / 255
    torch.testing.assert_close(item["image"], image)
    torch.testing.assert_close(item["mask"], torch.from_numpy(expected.masks[1])[None] / 255.0)
    assert item["pose"]["body_pose"].shape == (21, 3) and item["pose"]["transl"].shape == (3,)
    assert item["shape"].shape == (6,) and item["expression"].shape == (52,)
    assert {k: tuple(v.shape) for k, v in item["camera"].items()} == {
        "K": (3, 3),
        "R": (3, 3),
        "t": (3,),
        "crop_box": (4,),
    }
    assert {k: tuple(v.shape) for k, v in item["keypoints"].items()} == {
        "body": (33, 3),
        "left_hand": (21, 3),
        "right_hand": (21, 3),
        "face": (478, 3),
        "face_mesh": (478, 3),
    }
    torch.testing.assert_close(item["camera"]["R"], torch.from_numpy(expected.camera.R[1]))


def test_dataset_batches_into_smplx_pose_and_survives_pickling(subject_dir: Path):
    dataset = pickle.loads(pickle.dumps(SubjectDataset(subject_dir)))  # what spawned workers get
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    pose = SmplxPose(**batch["pose"])
    assert pose.batch_size == 2 and batch["image"].shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(pose.full(), make_subject().pose[0:2].full())


def test_dataset_from_in_memory_subject(tmp_path: Path):
    dataset = SubjectDataset(make_subject())
    assert dataset[-1]["index"].item() == N - 1 and dataset[-1]["mask"].shape == (1, SIZE, SIZE)


def test_split_holds_out_every_kth_frame_and_never_trains_on_it():
    dataset = SubjectDataset(make_subject(num_frames=10))
    train, held_out = dataset.split(3)
    assert held_out == [2, 5, 8]
    assert sorted(train + held_out) == list(range(10)) and not set(train) & set(held_out)
    seen = {item["index"].item() for item in torch.utils.data.Subset(dataset, train)}
    assert seen == set(train)
    assert dataset.split(20) == (list(range(10)), [])
    with pytest.raises(ValueError, match="every_k"):
        dataset.split(1)


# --- atomic, non-clobbering writes ---------------------------------------------------------


def fail_on_call(monkeypatch, module, name: str, call: int) -> None:
    """Make ``module.name`` raise on its ``call``-th use (1-based), like a crash mid-write."""
    original, calls = getattr(module, name), []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise OSError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


def test_existing_dataset_is_not_overwritten_by_default(subject_dir: Path):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_subject(subject_dir, make_subject(seed=1))
    assert_same(load_subject(subject_dir), make_subject())


def test_overwrite_replaces_and_leaves_nothing_behind(subject_dir: Path):
    write_subject(subject_dir, make_subject(seed=1), overwrite=True)
    assert_same(load_subject(subject_dir), make_subject(seed=1))
    assert siblings(subject_dir) == ["alice"]


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path: Path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_subject(tmp_path / "notes", make_subject(), overwrite=True)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_crash_mid_write_leaves_no_dataset(tmp_path: Path, monkeypatch):
    fail_on_call(monkeypatch, iio, "imwrite", 3)
    with pytest.raises(OSError, match="simulated crash"):
        write_subject(tmp_path / "alice", make_subject())
    assert os.listdir(tmp_path) == []  # neither the target nor the staging folder


def test_crash_mid_overwrite_keeps_the_old_dataset(subject_dir: Path, monkeypatch):
    fail_on_call(monkeypatch, iio, "imwrite", 3)
    with pytest.raises(OSError, match="simulated crash"):
        write_subject(subject_dir, make_subject(seed=1), overwrite=True)
    assert_same(load_subject(subject_dir), make_subject())
    assert siblings(subject_dir) == ["alice"]


def test_failed_swap_restores_the_old_dataset(subject_dir: Path, monkeypatch):
    fail_on_call(monkeypatch, os, "rename", 2)  # old moved aside, new one fails to move in
    with pytest.raises(OSError, match="simulated crash"):
        write_subject(subject_dir, make_subject(seed=1), overwrite=True)
    assert_same(load_subject(subject_dir), make_subject())
    assert siblings(subject_dir) == ["alice"]


def nan_at_frame_3(data: SubjectData) -> None:
    data.camera.K = data.camera.K.copy()
    data.camera.K[3, 0, 0] = np.nan


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (nan_at_frame_3, "camera.npz: K contains NaN at frame 3"),
        (lambda d: setattr(d, "pose", d.pose[0:3]), "smplx.npz: global_orient has shape (3, 3), expected (N=4, 3)"),
        (lambda d: setattr(d, "masks", d.masks[:3]), "masks: masks must be uint8 of shape (4, 32, 32)"),
        (lambda d: setattr(d, "fps", 0), "meta.json: fps must be a positive number, found 0.0"),
    ],
)
def test_invalid_data_is_refused_before_writing(tmp_path: Path, edit: Callable, message: str):
    data = make_subject()
    edit(data)
    with pytest.raises(SubjectFormatError) as error:
        write_subject(tmp_path / "alice", data)
    assert message in str(error.value)
    assert os.listdir(tmp_path) == []


# --- validation errors name the file and field ---------------------------------------------


def edit_meta(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        meta = json.loads((root / "meta.json").read_text())
        change(meta)
        (root / "meta.json").write_text(json.dumps(meta))

    return apply


def edit_npz(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        with np.load(root / name) as npz:
            arrays = dict(npz)
        change(arrays)
        np.savez(root / name, **arrays)

    return apply


def set_item(array_key: str, index: tuple, value: float) -> Callable[[dict], None]:
    return lambda arrays: arrays[array_key].__setitem__(index, value)


def copy_frame(root: Path) -> None:
    (root / "frames" / "000004.png").write_bytes((root / "frames" / "000000.png").read_bytes())


def write_png(relative: str, shape: tuple[int, ...]) -> Callable[[Path], None]:
    return lambda root: iio.imwrite(root / relative, np.zeros(shape, np.uint8))


def scale_rotation(frame: int, factor: float) -> Callable[[dict], None]:
    return lambda arrays: arrays["R"].__setitem__(frame, factor * arrays["R"][frame])


ERROR_CASES = [
    pytest.param(lambda r: (r / "meta.json").unlink(), ["meta.json is missing"], id="missing meta"),
    pytest.param(lambda r: (r / "meta.json").write_text("{"), ["meta.json: not valid JSON"], id="bad json"),
    pytest.param(
        edit_meta(lambda m: m.update(format="nerf-dataset")),
        ["meta.json: format is 'nerf-dataset', expected 'ram-avatar-subject'"],
        id="wrong format",
    ),
    pytest.param(
        edit_meta(lambda m: m.update(version=FORMAT_VERSION + 1)),
        ["meta.json: format version 2 was written by a newer ram-avatar", "upgrade ram-avatar"],
        id="newer version",
    ),
    pytest.param(
        edit_meta(lambda m: m.update(version="1")),
        ["meta.json: unknown format version '1'"],
        id="bad version",
    ),
    pytest.param(edit_meta(lambda m: m.pop("fps")), ["meta.json: missing field fps"], id="missing field"),
    pytest.param(
        edit_meta(lambda m: m["body_template"].update(name="star")),
        ["meta.json: body_template.name must be one of ('anny', 'smplx'), found 'star'"],
        id="unknown template",
    ),
    pytest.param(
        edit_meta(lambda m: m["source"].update(frame_indices=[0, 1])),
        ["meta.json: source.frame_indices must be a list of num_frames = 4"],
        id="frame indices",
    ),
    pytest.param(
        lambda r: (r / "frames" / "000002.png").unlink(),
        ["frames/000002.png is missing"],
        id="missing frame",
    ),
    pytest.param(copy_frame, ["frames/ holds 5 PNGs", "unexpected", "frames/000004.png"], id="extra frame"),
    pytest.param(
        write_png("frames/000001.png", (16, 16, 3)),
        ["frames/000001.png: expected an RGB image of shape (32, 32, 3) uint8", "found shape (16, 16, 3)"],
        id="frame size",
    ),
    pytest.param(
        lambda r: (r / "masks" / "000003.png").unlink(),
        ["masks/000003.png is missing", "masks/ holds 3 PNGs, expected one per frame"],
        id="mask count",
    ),
    pytest.param(
        write_png("masks/000000.png", (32, 32, 3)),
        ["masks/000000.png: expected a single-channel image of shape (32, 32)"],
        id="rgb mask",
    ),
    pytest.param(lambda r: (r / "camera.npz").unlink(), ["camera.npz is missing"], id="missing npz"),
    pytest.param(
        edit_npz("smplx.npz", lambda a: a.pop("jaw_pose")),
        ["smplx.npz: missing key 'jaw_pose'"],
        id="missing key",
    ),
    pytest.param(
        edit_npz("smplx.npz", lambda a: a.update(body_pose=a["body_pose"][:, :20])),
        ["smplx.npz: body_pose has shape (4, 20, 3), expected (N=4, 21, 3)"],
        id="pose shape",
    ),
    pytest.param(
        edit_npz("smplx.npz", lambda a: a.update(transl=a["transl"][:3])),
        ["smplx.npz: transl has shape (3, 3), expected (N=4, 3)"],
        id="frame count",
    ),
    pytest.param(
        edit_npz("keypoints.npz", lambda a: a.update(right_hand=a["right_hand"][:, :20])),
        ["keypoints.npz: right_hand has shape (4, 20, 3), expected (N=4, Kh=21, 3)"],
        id="hands differ",
    ),
    pytest.param(
        edit_npz("smplx.npz", lambda a: a.update(global_orient=a["global_orient"].astype(np.float64))),
        ["smplx.npz: global_orient has dtype float64, expected float32"],
        id="float64",
    ),
    pytest.param(
        edit_npz("camera.npz", set_item("K", (3, 0, 0), np.nan)),
        ["camera.npz: K contains NaN at frame 3"],
        id="NaN",
    ),
    pytest.param(
        edit_npz("smplx.npz", set_item("transl", (1, 2), np.inf)),
        ["smplx.npz: transl contains inf at frame 1"],
        id="inf",
    ),
    pytest.param(
        edit_npz("smplx.npz", set_item("shape", (2,), np.nan)),
        ["smplx.npz: shape contains NaN at index 2"],
        id="NaN shape",
    ),
    pytest.param(
        edit_npz("keypoints.npz", set_item("left_hand", (2, 5, 2), 1.5)),
        ["keypoints.npz: left_hand confidence (last column) must be in [0, 1], found 1.5 at frame 2"],
        id="confidence",
    ),
    pytest.param(
        edit_meta(lambda m: m["keypoints"].update(body="coco-17")),
        ["keypoints.npz: body has 33 points per frame", "keypoints.body is 'coco-17' (17 points)"],
        id="layout size",
    ),
    pytest.param(
        edit_meta(lambda m: m["body_template"].update(shape_labels=PHENOTYPE[:5])),
        ["smplx.npz: shape has 6 parameters", "body_template.shape_labels names 5"],
        id="labels",
    ),
    pytest.param(
        edit_npz("camera.npz", scale_rotation(1, 2.0)),
        ["camera.npz: R at frame 1 is not a rotation matrix"],
        id="scaled R",
    ),
    pytest.param(
        edit_npz("camera.npz", scale_rotation(0, -1.0)),
        ["camera.npz: R at frame 0 is not a rotation matrix"],
        id="reflection",
    ),
    pytest.param(
        edit_npz("camera.npz", set_item("K", (2, 2, 2), 0)),
        ["camera.npz: K at frame 2 is"],
        id="bad K",
    ),
    pytest.param(
        edit_npz("camera.npz", set_item("crop_boxes", (1, 2), 0)),
        ["camera.npz: crop_boxes at frame 1", "x0 < x1"],
        id="crop box",
    ),
]


@pytest.mark.parametrize(("corrupt", "messages"), ERROR_CASES)
def test_validation_names_the_file_and_field(subject_dir: Path, corrupt: Callable, messages: list[str]):
    corrupt(subject_dir)
    for check in (validate_subject, load_subject):
        with pytest.raises(SubjectFormatError) as error:
            check(subject_dir)
        for message in messages:
            assert message in str(error.value)
    assert isinstance(error.value, ValueError)


def test_pickled_npz_is_refused_without_being_unpickled(subject_dir: Path, tmp_path: Path):
    marker = tmp_path / "unpickled"

    class Trap:  # unpickling it would create `marker`
        def __reduce__(self):
            return open, (str(marker), "w")

    np.savez(subject_dir / "smplx.npz", body_pose=np.array([Trap()], dtype=object))
    with pytest.raises(SubjectFormatError, match="smplx.npz: cannot be read as a numpy .npz archive"):
        load_subject(subject_dir)
    assert not marker.exists()


def test_damaged_png_is_caught_when_decoded(subject_dir: Path):
    frame = subject_dir / "frames" / "000001.png"
    frame.write_bytes(frame.read_bytes()[:200])  # header intact, pixel data cut off
    with pytest.raises(SubjectFormatError, match="frames/000001.png: cannot be read as a PNG"):
        validate_subject(subject_dir)  # decodes everything
    dataset = SubjectDataset(subject_dir)  # lazy: reads headers only
    dataset[0]
    with pytest.raises(SubjectFormatError, match="frames/000001.png: cannot be read as a PNG"):
        dataset[1]
