"""Subject datasets in memory and on disk: write, load, validate, and serve frames for training.

The on-disk layout is specified in docs/subject_format.md; the rules live in
:mod:`ram_avatar.data.format`.
"""

from __future__ import annotations

import json
import operator
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import imageio.v3 as iio
import numpy as np
import torch

from ram_avatar import __version__
from ram_avatar.atomic import staged_folder
from ram_avatar.body.layout import SmplxPose
from ram_avatar.data.format import (
    CAMERA_ARRAYS,
    CAMERA_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    FRAMES_DIR,
    KEYPOINT_ARRAYS,
    KEYPOINTS_FILE,
    MASKS_DIR,
    META_FILE,
    SMPLX_FILE,
    SubjectFormatError,
    check_meta,
    check_subject_arrays,
    frame_file,
)


@dataclass
class TemplateInfo:
    """The body template whose spaces ``shape`` and ``expression`` live in (``body_template``)."""

    name: str  # "anny" or "smplx"
    shape_space: str  # e.g. "anny-phenotype-6", "smplx-betas-10"
    expression_space: str  # e.g. "anny-arkit-52", "smplx-expression-10"
    shape_labels: list[str] | None = None  # one name per shape parameter, if they have names
    expression_labels: list[str] | None = None


@dataclass
class CameraTrack:
    """Per-frame pinhole cameras (OpenCV: x_cam = R @ x_world + t) of the cropped frames."""

    K: np.ndarray  # (N, 3, 3) intrinsics in cropped-frame pixels
    R: np.ndarray  # (N, 3, 3) world -> camera rotation
    t: np.ndarray  # (N, 3) world -> camera translation, metres
    crop_boxes: np.ndarray  # (N, 4) x0, y0, x1, y1 of each crop in source-video pixels


class ImageSequence(Sequence):
    """The PNGs of ``frames/`` or ``masks/``, decoded one at a time when indexed.

    Stands in for an (N, H, W, 3) or (N, H, W) uint8 array: ``seq[i]``, ``len``, ``shape``,
    ``dtype`` and ``np.asarray(seq)`` (which decodes everything) work as for the array.
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, folder: Path, count: int, image_shape: tuple[int, ...]):
        self.folder = folder
        self.image_shape = image_shape
        self._count = count

    def __len__(self) -> int:
        return self._count

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._count, *self.image_shape)

    def __getitem__(self, index: int) -> np.ndarray:
        index = range(self._count)[operator.index(index)]  # negatives count from the end
        return _read_image(self.folder / frame_file(index), self.image_shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        images = np.stack([self[i] for i in range(self._count)])
        return images if dtype is None else images.astype(dtype)


@dataclass
class SubjectData:
    """One tracked clip of one person: everything a subject dataset holds.

    ``frames`` / ``masks`` are arrays, or :class:`ImageSequence` when loaded lazily.
    Shapes: N frames of H x W pixels, S shape and E expression parameters of the template,
    Kb / Kh / Kf body / hand / face keypoints.
    """

    frames: np.ndarray | ImageSequence  # (N, H, W, 3) uint8 RGB
    masks: np.ndarray | ImageSequence  # (N, H, W) uint8, 0 background .. 255 person
    pose: SmplxPose  # batch N, SMPL-X layout, world frame
    shape: np.ndarray  # (S,) float32 body shape shared by the clip, template space
    expression: np.ndarray  # (N, E) float32 facial expression, template space
    camera: CameraTrack
    # body (N, Kb, 3), left_hand / right_hand (N, Kh, 3), face (N, Kf, 3): [x, y, confidence] in
    # cropped-frame pixels; optional face_mesh (N, Kf, 3): 3D face landmarks, camera frame, metres.
    keypoints: dict[str, np.ndarray]
    template: TemplateInfo
    keypoint_layouts: dict[str, str]  # {"body": ..., "hand": ..., "face": ...} layout names
    fps: float
    source_video: str  # file name of the original video
    source_size: tuple[int, int]  # (H0, W0) of the original video
    frame_indices: list[int]  # index of each frame in the original video
    # (V,) float32 metres each template vertex sits out along the posed normal (clothes, hair,
    # build beyond the shape space; ram_avatar.tracking.surface), or None
    offsets: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the cropped frames."""
        return tuple(self.frames.shape[1:3])


def _check_image(where: str, shape: tuple, dtype: np.dtype, expected: tuple[int, ...]) -> None:
    if tuple(shape) != expected or dtype != np.uint8:
        kind = "an RGB image" if len(expected) == 3 else "a single-channel image"
        raise SubjectFormatError(
            f"{where}: expected {kind} of shape {expected} uint8 (meta.json image_size), "
            f"found shape {tuple(shape)} {dtype}"
        )


def _png(read, path: Path, shape: tuple[int, ...]):
    """``read(path)`` (imageio's imread or improps) with the result's size and type checked."""
    try:
        result = read(path, plugin="pillow")
    except FileNotFoundError:
        raise SubjectFormatError(f"{path} is missing") from None
    except Exception as error:  # pillow reports damaged files with several exception types
        raise SubjectFormatError(f"{path}: cannot be read as a PNG ({error})") from None
    _check_image(str(path), result.shape, result.dtype, shape)
    return result


def _read_image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Decode one frame or mask PNG, which must have ``shape`` and be uint8."""
    return _png(iio.imread, path, shape)


def _open_images(folder: Path, count: int, shape: tuple[int, ...], decode: bool) -> ImageSequence:
    """Check that ``folder`` holds exactly frames 0..count-1 of the right size (decoding them all
    with ``decode``, else reading only their headers), and return them as a lazy sequence."""
    if not folder.is_dir():
        raise SubjectFormatError(f"{folder}/ is missing (expected {count} PNGs, one per frame)")
    found = {entry.name for entry in os.scandir(folder) if entry.name.endswith(".png")}
    expected = {frame_file(i) for i in range(count)}
    if found != expected:
        summary = f"{folder}/ holds {len(found)} PNGs, expected one per frame ({count})"
        missing = sorted(expected - found)
        if missing:
            raise SubjectFormatError(f"{folder / missing[0]} is missing: {summary}")
        raise SubjectFormatError(f"{summary}: unexpected {folder / sorted(found - expected)[0]}")
    for i in range(count):
        _png(iio.imread if decode else iio.improps, folder / frame_file(i), shape)
    return ImageSequence(folder, count, shape)


def _read_meta(root: Path) -> dict:
    path = root / META_FILE
    if not path.is_file():
        raise SubjectFormatError(f"{path} is missing: {root} is not a ram-avatar subject dataset")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SubjectFormatError(f"{path}: not valid JSON ({error})") from None
    check_meta(meta, str(path))
    return meta


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise SubjectFormatError(f"{path} is missing")
    try:
        # allow_pickle=False: a dataset is user data, and unpickling it could run arbitrary code.
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        message = f"{path}: cannot be read as a numpy .npz archive ({error})"
        raise SubjectFormatError(message) from None


def _load(root: Path, decode: bool) -> SubjectData:
    meta = _read_meta(root)
    smplx, camera, keypoints = (_read_npz(root / name) for name in (SMPLX_FILE, CAMERA_FILE, KEYPOINTS_FILE))
    check_subject_arrays(root, meta, smplx, camera, keypoints)
    count, (height, width) = meta["num_frames"], meta["image_size"]
    template = meta["body_template"]
    return SubjectData(
        frames=_open_images(root / FRAMES_DIR, count, (height, width, 3), decode),
        masks=_open_images(root / MASKS_DIR, count, (height, width), decode),
        pose=SmplxPose.from_numpy(smplx),
        shape=smplx["shape"],
        expression=smplx["expression"],
        camera=CameraTrack(**{key: camera[key] for key in CAMERA_ARRAYS}),
        keypoints={key: keypoints[key] for key in KEYPOINT_ARRAYS if key in keypoints},
        template=TemplateInfo(
            name=template["name"],
            shape_space=template["shape_space"],
            expression_space=template["expression_space"],
            shape_labels=template.get("shape_labels"),
            expression_labels=template.get("expression_labels"),
        ),
        keypoint_layouts=dict(meta["keypoints"]),
        fps=float(meta["fps"]),
        source_video=meta["source"]["video"],
        source_size=tuple(meta["source"]["size"]),
        frame_indices=list(meta["source"]["frame_indices"]),
        offsets=smplx.get("offsets"),
    )


def load_subject(path: str | os.PathLike, frames: Literal["lazy", "eager"] = "lazy") -> SubjectData:
    """Load and validate a subject dataset.

    ``frames="lazy"`` checks every frame's and mask's PNG header (existence, size, channels) and
    returns :class:`ImageSequence` objects that decode on access; ``"eager"`` decodes everything
    into (N, H, W, 3) / (N, H, W) uint8 arrays. Raises :class:`SubjectFormatError`.
    """
    if frames not in ("lazy", "eager"):
        raise ValueError(f"frames must be 'lazy' or 'eager', got {frames!r}")
    data = _load(Path(path), decode=False)
    if frames == "eager":
        data.frames, data.masks = np.asarray(data.frames), np.asarray(data.masks)
    return data


def validate_subject(path: str | os.PathLike) -> None:
    """Check a subject dataset completely, decoding every PNG.

    Raises :class:`SubjectFormatError` naming the first problem found.
    """
    _load(Path(path), decode=True)


def _float32(arrays: dict) -> dict[str, np.ndarray]:
    return {key: np.asarray(value, np.float32) for key, value in arrays.items()}


def _to_files(data: SubjectData, target: Path) -> tuple[dict, dict, dict, dict]:
    """meta.json content and the arrays of the three .npz files, validated like the loader does."""
    frames_shape, masks_shape = tuple(data.frames.shape), tuple(data.masks.shape)
    if len(frames_shape) != 4 or frames_shape[3] != 3 or data.frames.dtype != np.uint8:
        raise SubjectFormatError(
            f"{target / FRAMES_DIR}: frames must be an (N, H, W, 3) uint8 RGB array, "
            f"found shape {frames_shape} {data.frames.dtype}"
        )
    if masks_shape != frames_shape[:3] or data.masks.dtype != np.uint8:
        raise SubjectFormatError(
            f"{target / MASKS_DIR}: masks must be uint8 of shape {frames_shape[:3]} "
            f"(one H x W mask per frame), found shape {masks_shape} {data.masks.dtype}"
        )
    template = data.template
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "num_frames": frames_shape[0],
        "fps": float(data.fps),
        "image_size": list(frames_shape[1:3]),
        "source": {
            "video": data.source_video,
            "size": [int(size) for size in data.source_size],
            "frame_indices": [int(index) for index in data.frame_indices],
        },
        "body_template": {
            "name": template.name,
            "shape_space": template.shape_space,
            "shape_labels": template.shape_labels,
            "expression_space": template.expression_space,
            "expression_labels": template.expression_labels,
        },
        "keypoints": dict(data.keypoint_layouts),
        "created_by": f"ram-avatar {__version__}",
    }
    check_meta(meta, str(target / META_FILE))
    smplx = _float32({**data.pose.to_numpy(), "shape": data.shape, "expression": data.expression})
    if data.offsets is not None:
        smplx["offsets"] = np.asarray(data.offsets, np.float32)
    camera, keypoints = _float32(vars(data.camera)), _float32(data.keypoints)
    check_subject_arrays(target, meta, smplx, camera, keypoints)
    return meta, smplx, camera, keypoints


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    """Flush every file (and, on POSIX, folder) under ``root`` to disk, so that the rename that
    publishes the dataset can never survive a power cut that its contents did not."""
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(os.path.join(folder, name))
        if os.name == "posix":  # folders cannot be opened for fsync on Windows
            _fsync(folder)


def _is_subject_dir(path: Path) -> bool:
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        return meta.get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def _check_target(target: Path, overwrite: bool) -> None:
    if not target.exists() and not target.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    # Never delete something that is not ours: a typo in an output path must not wipe a folder.
    ours = target.is_dir() and not target.is_symlink()
    if not ours or (any(target.iterdir()) and not _is_subject_dir(target)):
        raise FileExistsError(f"refusing to overwrite {target}: not a ram-avatar subject dataset")


def write_subject(path: str | os.PathLike, data: SubjectData, overwrite: bool = False) -> Path:
    """Validate ``data`` and write it as a subject dataset at ``path``, atomically.

    Everything is written into a hidden staging folder next to ``path`` (same filesystem), flushed
    to disk and renamed into place, so ``path`` never holds a half-written dataset: on any error
    the staging folder is removed (one left by a killed run, by the next write: see
    :mod:`ram_avatar.atomic`) and an existing dataset is left untouched. An existing ``path``
    is replaced only with ``overwrite=True``, and only if it is a subject dataset or an empty
    folder (else :class:`FileExistsError`). ``data`` may be lazily loaded from ``path`` itself.

    Raises :class:`SubjectFormatError` (before writing anything) if ``data`` breaks the format.
    Returns ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    meta, smplx, camera, keypoints = _to_files(data, target)
    _check_target(target, overwrite)
    with staged_folder(target) as staging:  # also removes what a killed run half-wrote
        for folder, images in ((FRAMES_DIR, data.frames), (MASKS_DIR, data.masks)):
            (staging / folder).mkdir()
            for i in range(meta["num_frames"]):
                image = np.asarray(images[i])  # decodes a lazily loaded source frame
                iio.imwrite(staging / folder / frame_file(i), image, plugin="pillow")
        for name, arrays in (SMPLX_FILE, smplx), (CAMERA_FILE, camera), (KEYPOINTS_FILE, keypoints):
            np.savez_compressed(staging / name, **arrays)
        text = json.dumps(meta, indent=2, allow_nan=False) + "\n"
        (staging / META_FILE).write_text(text, encoding="utf-8")
        _sync_tree(staging)
    if os.name == "posix":
        _fsync(target.parent)  # make the rename itself durable
    return target


def _tensors(arrays: dict) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value) for key, value in _float32(arrays).items()}


class SubjectDataset(torch.utils.data.Dataset):
    """The frames of one subject for training, each decoded from its PNG when requested.

    Item ``i`` is frame ``i`` of the subject, a dict of float32 tensors (``index`` is long):

        index       ()          frame number in the subject, e.g. to pick a per-frame code
        image       (3, H, W)   RGB in [0, 1]
        mask        (1, H, W)   person mask in [0, 1]
        pose        dict        SMPL-X-layout pose, e.g. body_pose (21, 3), transl (3,);
                                after collation ``SmplxPose(**batch["pose"])``
        shape       (S,)        template shape parameters (the same for every frame)
        expression  (E,)
        camera      dict        K (3, 3), R (3, 3), t (3,), crop_box (4,)
        keypoints   dict        body (Kb, 3), left_hand / right_hand (Kh, 3), face (Kf, 3)
                                as [x, y, confidence], and face_mesh (Kf, 3) if present

    Parameters are held in memory; only images are read per item, so DataLoader workers only
    share file paths. Hold frames out with ``train, held_out = dataset.split(k)`` and train on
    ``torch.utils.data.Subset(dataset, train)``.
    """

    def __init__(self, subject: str | os.PathLike | SubjectData):
        self.subject = subject if isinstance(subject, SubjectData) else load_subject(subject)
        camera = self.subject.camera
        # Per-frame parameters, indexed by frame in __getitem__.
        self._params = {
            "pose": _tensors(self.subject.pose.to_numpy()),
            "expression": torch.from_numpy(np.asarray(self.subject.expression, np.float32)),
            "camera": _tensors({"K": camera.K, "R": camera.R, "t": camera.t, "crop_box": camera.crop_boxes}),
            "keypoints": _tensors(self.subject.keypoints),
        }
        self._shape = torch.from_numpy(np.asarray(self.subject.shape, np.float32))

    def __len__(self) -> int:
        return self.subject.num_frames

    def __getitem__(self, index: int) -> dict:
        i = range(len(self))[index]
        image = torch.from_numpy(np.asarray(self.subject.frames[i])).permute(2, 0, 1).float() / 255
        mask = torch.from_numpy(np.asarray(self.subject.masks[i]))[None].float() / 255
        item = {"index": torch.tensor(i), "image": image, "mask": mask, "shape": self._shape}
        for key, value in self._params.items():
            item[key] = {k: v[i] for k, v in value.items()} if isinstance(value, dict) else value[i]
        return item

    def split(self, every_k: int) -> tuple[list[int], list[int]]:
        """(train, held_out) frame indices; every k-th frame (k-1, 2k-1, ...) is held out."""
        if every_k < 2:
            raise ValueError(f"every_k must be at least 2 (1 holds out every frame), got {every_k}")
        held_out = list(range(every_k - 1, len(self), every_k))
        train = [i for i in range(len(self)) if (i + 1) % every_k != 0]
        return train, held_out
