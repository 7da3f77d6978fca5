"""The subject dataset format, version 1: names, array specs and validation.

The human-readable spec is docs/subject_format.md.

Every check raises :class:`SubjectFormatError` with a message that starts with the file it is
about and says what was expected and what was found. The checks work on plain dicts and arrays
so that the writer (before touching the disk) and the loader run exactly the same rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ram_avatar import __version__
from ram_avatar.body import TEMPLATES

FORMAT_NAME = "ram-avatar-subject"
FORMAT_VERSION = 1  # bump on any change an older reader would misread (see the version policy)

META_FILE = "meta.json"
SMPLX_FILE = "smplx.npz"
CAMERA_FILE = "camera.npz"
KEYPOINTS_FILE = "keypoints.npz"
FRAMES_DIR = "frames"
MASKS_DIR = "masks"

# Array shapes per file. Ints are fixed sizes; names are sizes shared by every array of the
# subject: N frames, S shape and E expression parameters, Kb / Kh / Kf body / hand / face points.
SMPLX_ARRAYS: dict[str, tuple[int | str, ...]] = {
    "global_orient": ("N", 3),
    "body_pose": ("N", 21, 3),
    "jaw_pose": ("N", 3),
    "leye_pose": ("N", 3),
    "reye_pose": ("N", 3),
    "left_hand_pose": ("N", 15, 3),
    "right_hand_pose": ("N", 15, 3),
    "transl": ("N", 3),
    "shape": ("S",),
    "expression": ("N", "E"),
    "offsets": ("V",),  # optional: surface offsets along the normals, metres (V template vertices)
}
CAMERA_ARRAYS: dict[str, tuple[int | str, ...]] = {
    "K": ("N", 3, 3),
    "R": ("N", 3, 3),
    "t": ("N", 3),
    "crop_boxes": ("N", 4),
}
KEYPOINT_ARRAYS: dict[str, tuple[int | str, ...]] = {
    "body": ("N", "Kb", 3),
    "left_hand": ("N", "Kh", 3),
    "right_hand": ("N", "Kh", 3),
    "face": ("N", "Kf", 3),
    "face_mesh": ("N", "Kf", 3),  # optional
}
OPTIONAL_ARRAYS = frozenset({"face_mesh", "offsets"})
MAX_OFFSET = 0.5  # metres: a surface offset beyond this is a bug, not clothes
DETECTIONS = ("body", "left_hand", "right_hand", "face")  # [x, y, confidence] arrays
# Which layout name in meta.json "keypoints" describes which array size.
LAYOUT_SIZES = {"body": "Kb", "hand": "Kh", "face": "Kf"}


class SubjectFormatError(ValueError):
    """A subject dataset (on disk or about to be written) does not follow the format."""


def frame_file(index: int) -> str:
    """File name of frame / mask ``index`` inside ``frames/`` and ``masks/``: ``000042.png``."""
    return f"{index:06d}.png"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return _is_int(value) and value > 0


def _is_positive_number(value: Any) -> bool:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return is_number and math.isfinite(value) and value > 0


def _is_index(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _is_size(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_positive_int(v) for v in value)


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _is_labels(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))


# meta.json fields after format and version: (dotted name, check, what is expected, optional).
META_FIELDS: tuple[tuple[str, Callable[[Any], bool], str, bool], ...] = (
    ("num_frames", _is_positive_int, "a positive integer", False),
    ("fps", _is_positive_number, "a positive number", False),
    ("image_size", _is_size, "[H, W], two positive integers", False),
    ("source.video", _is_string, "a string", False),
    ("source.size", _is_size, "[H0, W0], two positive integers", False),
    ("body_template.name", lambda v: v in TEMPLATES, f"one of {TEMPLATES}", False),
    ("body_template.shape_space", _is_name, "a non-empty string", False),
    ("body_template.expression_space", _is_name, "a non-empty string", False),
    ("body_template.shape_labels", _is_labels, "a list of strings or null", True),
    ("body_template.expression_labels", _is_labels, "a list of strings or null", True),
    *((f"keypoints.{part}", _is_name, "a keypoint layout name", False) for part in LAYOUT_SIZES),
    ("created_by", _is_string, "a string", False),
)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field(
    meta: dict,
    dotted: str,
    where: str,
    check: Callable[[Any], bool],
    expected: str,
    optional: bool = False,
) -> Any:
    """The value at ``dotted`` (e.g. ``"source.size"``) if ``check`` accepts it, else raise."""
    value: Any = meta
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            if optional:
                return None
            raise SubjectFormatError(f"{where}: missing field {dotted} ({expected})")
        value = value[part]
    if not check(value):
        raise SubjectFormatError(f"{where}: {dotted} must be {expected}, found {_short(value)}")
    return value


def check_meta(meta: Any, where: str) -> None:
    """Validate the parsed ``meta.json`` object; ``where`` names the file in messages."""
    if not isinstance(meta, dict):
        raise SubjectFormatError(f"{where}: expected a JSON object, found {type(meta).__name__}")
    if meta.get("format") != FORMAT_NAME:
        raise SubjectFormatError(
            f"{where}: format is {_short(meta.get('format'))}, expected {FORMAT_NAME!r} "
            "(is this a ram-avatar subject dataset?)"
        )
    version = meta.get("version")
    if not _is_int(version) or version < 1:
        raise SubjectFormatError(
            f"{where}: unknown format version {_short(version)}, expected an integer from 1 to {FORMAT_VERSION}"
        )
    if version > FORMAT_VERSION:
        raise SubjectFormatError(
            f"{where}: format version {version} was written by a newer ram-avatar; this one "
            f"({__version__}) reads versions up to {FORMAT_VERSION}: upgrade ram-avatar"
        )
    for dotted, check, expected, optional in META_FIELDS:
        _field(meta, dotted, where, check, expected, optional)
    num_frames = meta["num_frames"]
    _field(
        meta,
        "source.frame_indices",
        where,
        lambda v: isinstance(v, list) and len(v) == num_frames and all(_is_index(i) for i in v),
        f"a list of num_frames = {num_frames} non-negative integers",
    )


def _format_dims(dims: tuple[int | str, ...], sizes: dict[str, int]) -> str:
    parts = [f"{d}={sizes[d]}" if d in sizes else str(d) for d in dims]
    return f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"


def check_arrays(
    where: str,
    arrays: dict[str, np.ndarray],
    spec: dict[str, tuple[int | str, ...]],
    sizes: dict[str, int],
) -> None:
    """Check presence, float32 dtype, shape and finiteness of every array of one file.

    ``sizes`` holds the named sizes known so far (at least ``N``); sizes first seen here are
    added to it, so later arrays and files must agree with them.
    """
    for key, dims in spec.items():
        if key not in arrays:
            if key in OPTIONAL_ARRAYS:
                continue
            raise SubjectFormatError(f"{where}: missing key {key!r} (expected keys: {', '.join(spec)})")
        value = arrays[key]
        if value.dtype != np.float32:
            raise SubjectFormatError(f"{where}: {key} has dtype {value.dtype}, expected float32")
        bound = dict(sizes)
        matches = value.ndim == len(dims) and all(
            size == (bound.setdefault(dim, size) if isinstance(dim, str) else dim)
            for size, dim in zip(value.shape, dims)
        )
        if not matches:
            raise SubjectFormatError(
                f"{where}: {key} has shape {tuple(value.shape)}, expected {_format_dims(dims, sizes)}"
            )
        sizes.update(bound)
        bad = ~np.isfinite(value)
        if bad.any():
            first = tuple(np.argwhere(bad)[0])
            kind = "NaN" if np.isnan(value[first]) else "inf"
            at = f"frame {first[0]}" if dims[0] == "N" else f"index {first[0]}"
            raise SubjectFormatError(f"{where}: {key} contains {kind} at {at}")


def _rounded(array: np.ndarray) -> list:
    return np.round(array.astype(np.float64), 4).tolist()


def _check_camera(where: str, camera: dict[str, np.ndarray]) -> None:
    K, R, boxes = camera["K"], camera["R"], camera["crop_boxes"]
    bad_K = (
        (np.abs(K[:, 2] - np.array([0, 0, 1], np.float32)).max(axis=1) > 1e-6)
        | (K[:, 1, 0] != 0)
        | (K[:, 0, 0] <= 0)
        | (K[:, 1, 1] <= 0)
    )
    if bad_K.any():
        i = int(np.argmax(bad_K))
        raise SubjectFormatError(
            f"{where}: K at frame {i} is {_rounded(K[i])}, expected a pinhole matrix "
            "[[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0"
        )
    # float32 rotations from any sane tracker are orthonormal to ~1e-6; 1e-3 only catches bugs
    # such as a scaled matrix or a reflection, not rounding.
    orthogonality = np.abs(R @ R.transpose(0, 2, 1) - np.eye(3, dtype=np.float32)).max(axis=(1, 2))
    bad_R = (orthogonality > 1e-3) | (np.linalg.det(R) < 0)
    if bad_R.any():
        i = int(np.argmax(bad_R))
        raise SubjectFormatError(
            f"{where}: R at frame {i} is not a rotation matrix "
            f"(needs R @ R.T = I and det(R) = +1), found {_rounded(R[i])}"
        )
    bad_boxes = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad_boxes.any():
        i = int(np.argmax(bad_boxes))
        raise SubjectFormatError(
            f"{where}: crop_boxes at frame {i} is {_rounded(boxes[i])}, expected [x0, y0, x1, y1] "
            "with x0 < x1 and y0 < y1"
        )


def _check_keypoints(where: str, keypoints: dict[str, np.ndarray], meta: dict, meta_where: str) -> None:
    for key in DETECTIONS:
        confidence = keypoints[key][..., 2]
        bad = (confidence < 0) | (confidence > 1)
        if bad.any():
            frame, point = np.argwhere(bad)[0]
            raise SubjectFormatError(
                f"{where}: {key} confidence (last column) must be in [0, 1], found "
                f"{confidence[frame, point]:g} at frame {frame}, point {point}"
            )
    # Layout names end in their point count ("mediapipe-pose-33"); hold the arrays to it.
    for part in LAYOUT_SIZES:
        name = meta["keypoints"][part]
        count = re.fullmatch(r".*-(\d+)", name)
        key = "left_hand" if part == "hand" else part
        found = keypoints[key].shape[1]
        if count and int(count.group(1)) != found:
            raise SubjectFormatError(
                f"{where}: {key} has {found} points per frame, but {meta_where} keypoints.{part} "
                f"is {name!r} ({count.group(1)} points)"
            )


def check_subject_arrays(
    root: Path,
    meta: dict,
    smplx: dict[str, np.ndarray],
    camera: dict[str, np.ndarray],
    keypoints: dict[str, np.ndarray],
) -> None:
    """Check the three parameter files against the spec, each other and a valid ``meta``."""
    sizes = {"N": meta["num_frames"]}
    check_arrays(str(root / SMPLX_FILE), smplx, SMPLX_ARRAYS, sizes)
    check_arrays(str(root / CAMERA_FILE), camera, CAMERA_ARRAYS, sizes)
    check_arrays(str(root / KEYPOINTS_FILE), keypoints, KEYPOINT_ARRAYS, sizes)
    template = meta["body_template"]
    for key, size in (("shape", "S"), ("expression", "E")):
        labels = template.get(f"{key}_labels")
        if labels is not None and len(labels) != sizes[size]:
            raise SubjectFormatError(
                f"{root / SMPLX_FILE}: {key} has {sizes[size]} parameters, but "
                f"{root / META_FILE} body_template.{key}_labels names {len(labels)}"
            )
    if "offsets" in smplx and np.abs(smplx["offsets"]).max(initial=0) > MAX_OFFSET:
        raise SubjectFormatError(
            f"{root / SMPLX_FILE}: offsets must be within +-{MAX_OFFSET} m of the template's surface, "
            f"found {np.abs(smplx['offsets']).max():.3g} m"
        )
    _check_camera(str(root / CAMERA_FILE), camera)
    _check_keypoints(str(root / KEYPOINTS_FILE), keypoints, meta, str(root / META_FILE))
