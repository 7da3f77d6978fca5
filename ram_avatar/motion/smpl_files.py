"""SMPL-family motion files: AMASS ``.npz`` and SMPL-X parameter ``.npz`` / ``.json``.

Read with ``np.load(..., allow_pickle=False)``: a file whose arrays need unpickling is refused.

* AMASS: ``poses`` (T, 156) SMPL-H (root, 21 body joints, 15 + 15 hand joints: the same joints,
  in the same order, as SMPL-X's, which adds jaw and eyes), (T, 165) SMPL-X or (T, 72) SMPL
  (its two hand joints are dropped); ``trans`` (T, 3); ``mocap_framerate`` or
  ``mocap_frame_rate``. ``betas`` and ``gender`` belong to the capture subject's body and are
  not used: the motion drives whatever body the avatar has.
* SMPL-X parameters, as smplx / SMPLer-X-like tools write them: ``global_orient`` and
  ``body_pose`` (required), ``jaw_pose``, ``leye_pose``, ``reye_pose``, ``left_hand_pose``,
  ``right_hand_pose``, ``transl`` (zeros when absent), any of them (T, n * 3) or (T, n, 3), and
  optionally ``fps``. Hand poses must be full axis-angle in the flat-hand convention (smplx
  ``use_pca=False, flat_hand_mean=True``, AMASS's too). A ``.json`` file holds the same keys
  (lists of numbers), or a list of per-frame objects with those keys.

Files come in their own axes: AMASS is Z-up, estimators often write OpenCV camera axes (+Y
down). ``upright_rotation`` snaps the clip's average body-up direction onto +Y.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from ram_avatar.body.layout import NUM_JOINTS, POSE_PARTS, SmplxPose
from ram_avatar.limits import check_limit
from ram_avatar.motion.sequence import MB, MotionFormatError, check_finite, rotate_world, upright_rotation

FORMAT_NAME = "ram-avatar-motion"  # the "format" entry of files written by save_motion
FPS_KEYS = ("fps", "mocap_framerate", "mocap_frame_rate", "frame_rate")
_AMASS_LAYOUTS = {156: "SMPL-H", 165: "SMPL-X", 72: "SMPL"}


def _numeric(value: object, key: str, where: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged lists in JSON
        raise MotionFormatError(f"{where}: {key!r} is not a rectangular array of numbers ({error})") from None
    if array.dtype.kind not in "biuf":
        raise MotionFormatError(f"{where}: {key!r} must hold numbers, found dtype {array.dtype}")
    array = array.astype(np.float64)
    check_finite(array, f"{where}: {key!r}")
    return array


def _read(data: np.lib.npyio.NpzFile, key: str, where: str) -> np.ndarray:
    try:
        value = data[key]
    except ValueError:  # np.load refuses object arrays without allow_pickle
        raise MotionFormatError(
            f"{where}: {key!r} is a pickled object array; motion files must "
            "hold plain numeric arrays (ram-avatar never unpickles files)"
        ) from None
    return _numeric(value, key, where)


def _text(data: np.lib.npyio.NpzFile, key: str) -> str:
    """A text entry of an .npz ("" when absent or not plain text)."""
    try:
        value = data[key] if key in data.files else None
    except ValueError:
        return ""
    return str(value) if value is not None and value.dtype.kind == "U" else ""


def _frame_rate(fields: dict[str, object], where: str) -> float | None:
    key = next((k for k in FPS_KEYS if k in fields), None)
    if key is None:
        return None
    value = _numeric(fields[key], key, where).reshape(-1)
    if value.size != 1 or value[0] <= 0:
        raise MotionFormatError(f"{where}: {key!r} must be one positive number, got {value.tolist()[:4]}")
    return float(value[0])


def _no_frames(path: Path) -> MotionFormatError:
    return MotionFormatError(f"the motion file {path.name} has no frames; export it with at least one")


def _check_frames(array: np.ndarray | None, path: Path) -> None:
    """Refuse a clip whose per-frame array ``array`` is empty (None: absent, reported later)."""
    if array is not None and array.size == 0:
        raise _no_frames(path)


def amass_pose(poses: np.ndarray, trans: np.ndarray, where: str) -> SmplxPose:
    """SMPL-X layout from AMASS ``poses`` (T, 156 | 165 | 72) and ``trans`` (T, 3), file axes."""
    if poses.ndim != 2 or poses.shape[1] not in _AMASS_LAYOUTS:
        raise MotionFormatError(
            f"{where}: 'poses' must be (T, 156) SMPL-H, (T, 165) SMPL-X or (T, 72) SMPL axis-angle, got {poses.shape}"
        )
    if trans.shape != (poses.shape[0], 3):
        raise MotionFormatError(f"{where}: 'trans' must be (T, 3) = {(poses.shape[0], 3)}, got {trans.shape}")
    count = poses.shape[0]
    full = np.zeros((count, NUM_JOINTS, 3))
    if poses.shape[1] == 165:
        full[:] = poses.reshape(count, NUM_JOINTS, 3)
    else:
        full[:, :22] = poses[:, :66].reshape(count, 22, 3)  # root + 21 body joints, SMPL-X order
        if poses.shape[1] == 156:  # SMPL-H hands: left 15 then right 15, SMPL-X's order
            full[:, 25:55] = poses[:, 66:].reshape(count, 30, 3)
    return SmplxPose.from_full(torch.from_numpy(full).float(), torch.from_numpy(trans).float())


def smplx_pose(fields: dict[str, np.ndarray], where: str) -> SmplxPose:
    """SMPL-X layout from SMPL-X parameter arrays (see the module docstring), file axes."""
    missing = [k for k in ("global_orient", "body_pose") if k not in fields]
    if missing:
        raise MotionFormatError(
            f"{where}: missing {missing}; SMPL-X parameter files need "
            "'global_orient' and 'body_pose' (AMASS files need 'poses')"
        )
    if "flat_hand_mean" in fields and not bool(np.asarray(fields["flat_hand_mean"]).reshape(-1)[0]):
        raise MotionFormatError(
            f"{where}: hand poses relative to SMPL-X's mean hand (flat_hand_mean="
            "False) are not supported; export with flat_hand_mean=True"
        )
    orient = fields["global_orient"]
    count = orient.shape[0] if orient.ndim > 1 else 1
    parts: dict[str, torch.Tensor] = {}
    for key, (_, joints) in {**POSE_PARTS, "transl": (0, 1)}.items():
        if key not in fields:
            value = np.zeros((count, joints * 3))
        else:
            raw = fields[key]
            value = raw.reshape(1 if raw.ndim <= 1 else raw.shape[0], -1)
            width = value.shape[1]
            if key == "body_pose" and width == 69:  # SMPL's 23 joints: the last two are its hands
                value = value[:, :63]
            elif key.endswith("hand_pose") and 0 < width < 45:
                raise MotionFormatError(
                    f"{where}: {key!r} has {width} values per frame: PCA hand components are not "
                    "supported (decoding them needs the licensed MANO / SMPL-X hand basis); "
                    "export full 45-value axis-angle hand poses (smplx use_pca=False)"
                )
            if value.shape != (count, joints * 3):
                raise MotionFormatError(
                    f"{where}: {key!r} must be ({count}, {joints * 3}) or ({count}, {joints}, 3), got {raw.shape}"
                )
        value = torch.from_numpy(value).float()
        parts[key] = value if joints == 1 else value.reshape(count, joints, 3)
    return SmplxPose(**parts)


def load_npz(path: Path) -> tuple[SmplxPose, float | None, dict[str, str] | None]:
    """(poses in SMPL-X axes, frame rate or None, our own file's metadata or None)."""
    where = f"motion file {path}"
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise MotionFormatError(f"{where}: not a readable .npz archive ({error})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # a single .npy array under an .npz name
        raise MotionFormatError(f"{where}: not a readable .npz archive (it holds a single array)")
    with data:
        # A compressed archive can hold far more than its size: bound what it unpacks to as well.
        unpacked = sum(info.file_size for info in data.zip.infolist())
        check_limit("motion_file_mb", unpacked / MB, f"{path.name} (unpacked)")
        keys = set(data.files)
        if "poses" in keys:
            fields = {k: _read(data, k, where) for k in ("poses", "trans") if k in keys}
            _check_frames(fields["poses"], path)
            if "trans" not in fields:
                raise MotionFormatError(f"{where}: AMASS files need 'trans' (T, 3) next to 'poses'")
            pose = amass_pose(fields["poses"], fields["trans"], where)
            fields |= {k: _read(data, k, where) for k in FPS_KEYS if k in keys}
        elif keys & {"global_orient", "body_pose"}:
            names = set(POSE_PARTS) | {"transl", "flat_hand_mean", *FPS_KEYS}
            fields = {k: _read(data, k, where) for k in keys & names}
            _check_frames(fields.get("global_orient", fields.get("body_pose")), path)
            pose = smplx_pose(fields, where)
            if _text(data, "format") == FORMAT_NAME:
                meta = {k: _text(data, k) for k in ("name", "joint_map")}
                return pose, _frame_rate(fields, where), meta
        else:
            raise MotionFormatError(
                f"{where}: unknown .npz layout (keys {sorted(keys)}); expected "
                "AMASS 'poses' + 'trans' or SMPL-X 'global_orient' + 'body_pose' ..."
            )
    return rotate_world(pose, upright_rotation(pose.global_orient)), _frame_rate(fields, where), None


def load_json(path: Path) -> tuple[SmplxPose, float | None]:
    """SMPL-X parameters from a .json file: (poses in SMPL-X axes, frame rate or None)."""
    where = f"motion file {path}"
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MotionFormatError(f"{where}: not valid JSON ({error})") from None
    if isinstance(content, list):  # one object per frame
        if not content:
            raise _no_frames(path)
        if not all(isinstance(f, dict) for f in content):
            raise MotionFormatError(f"{where}: a JSON list must hold one object per frame")
        keys = set(content[0])
        content = {k: [f.get(k) for f in content] for k in keys if k not in FPS_KEYS} | {
            k: content[0][k] for k in keys & set(FPS_KEYS)
        }
    if not isinstance(content, dict):
        raise MotionFormatError(f"{where}: expected an object of SMPL-X parameter arrays")
    names = set(POSE_PARTS) | {"transl", "flat_hand_mean", *FPS_KEYS}
    fields = {k: _numeric(v, k, where) for k, v in content.items() if k in names}
    _check_frames(fields.get("global_orient", fields.get("body_pose")), path)
    pose = smplx_pose(fields, where)
    return rotate_world(pose, upright_rotation(pose.global_orient)), _frame_rate(fields, where)
