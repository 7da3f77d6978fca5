"""Loading motion from any supported file, saving our own SMPL-X-layout ``.npz``."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ram_avatar.atomic import staged_file
from ram_avatar.body.layout import SmplxPose
from ram_avatar.limits import check_limit
from ram_avatar.motion.bvh import load_bvh
from ram_avatar.motion.sequence import MB, Motion, MotionFormatError, canonicalise, check_finite, resample
from ram_avatar.motion.smpl_files import FORMAT_NAME, load_json, load_npz

MOTION_EXTENSIONS = (".bvh", ".npz", ".json")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
FORMAT_VERSION = 1


def load_motion(
    path: str | os.PathLike,
    fps: float | None = None,
    *,
    max_frames: int | None = None,
    source_fps: float | None = None,
    canonical: bool = True,
    extra_names: dict[str, list[str]] | None = None,
) -> Motion:
    """Load a motion file as SMPL-X-layout poses in the SMPL-X world (+Y up, metres).

    Inputs are bounded before work is done (``ram_avatar.limits``): the file's size, its frame
    rate and the number of frames kept; only the kept frames are resampled, and of a BVH file
    only the frames they need are read.

    Args:
        path: ``.bvh``; AMASS ``.npz``; SMPL-X parameter ``.npz`` / ``.json`` (what
            :func:`save_motion` writes is one of these); a video (tracked with
            :func:`ram_avatar.tracking.pipeline.track` into a cache folder, once per file); or
            a subject dataset folder (a clip tracked with ``ram-avatar track``).
        fps: resample to this frame rate (slerp rotations, lerp translation); None keeps the file's.
        max_frames: keep at most this many frames (after resampling); None keeps them all.
        source_fps: the file's frame rate, for files that store none (or to override theirs).
        canonical: turn the clip so its first frame faces +Z (towards the camera) and start the
            root at the horizontal origin, with the height measured from standing (BVH: from
            the skeleton, over the frames read; SMPL-family files: from the clip's median root
            height). Files written by :func:`save_motion` are always returned exactly as saved.
        extra_names: BVH only: SMPL-X joint -> more joint names to map (see ``names.py``).
    Raises:
        FileNotFoundError: no such file.
        MotionFormatError: anything malformed or unsupported; the message says what is wrong.
        LimitError: the file, its frame rate or the frames kept are over a limit.
    """
    path = Path(path)
    if source_fps is not None:
        check_limit("fps", source_fps, "the given source frame rate")
    if path.is_dir() and (path / "meta.json").is_file():  # a tracked clip: a subject dataset
        return _from_poses(_subject_pose(path), path, fps, max_frames, canonical)
    if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        return _from_poses(_tracked_video(path), path, fps, max_frames, canonical)
    if not path.is_file():
        raise FileNotFoundError(f"motion file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in MOTION_EXTENSIONS:
        raise MotionFormatError(
            f"{path}: unsupported motion file type {suffix!r}; supported: {', '.join(MOTION_EXTENSIONS)}"
        )
    check_limit("motion_file_mb", path.stat().st_size / MB, path.name)
    joint_map: dict[str, str] = {}
    meta = None
    if suffix == ".bvh":  # read at the requested rate and length: only the frames kept
        pose, file_fps, joint_map = load_bvh(path, extra_names, fps=fps, max_frames=max_frames, source_fps=source_fps)
    else:
        pose, file_fps, meta = load_npz(path) if suffix == ".npz" else (*load_json(path), None)
        file_fps = source_fps or file_fps
        if file_fps is None:
            raise MotionFormatError(
                f"{path}: the file stores no frame rate; pass source_fps (command line: --source-fps)"
            )
        check_limit("fps", file_fps, path.name)
    if meta is None and canonical:
        if suffix != ".bvh":  # BVH heights are already measured from standing
            transl = pose.transl.clone()
            transl[:, 1] -= transl[:, 1].median()
            pose = replace(pose, transl=transl)
        pose = canonicalise(pose)
    name = (meta or {}).get("name") or path.stem
    if meta and meta.get("joint_map"):
        try:
            joint_map = dict(json.loads(meta["joint_map"]))
        except (ValueError, TypeError):
            raise MotionFormatError(f"{path}: 'joint_map' must be a JSON object of joint names") from None
    if suffix != ".bvh":  # (a BVH was read at the requested rate)
        pose = resample(pose, file_fps, fps or file_fps, max_frames, path.name)
        file_fps = fps or file_fps
    check_finite(_values(pose), f"motion file {path}")  # in float32, as used and stored
    return Motion(pose, float(file_fps), name, str(path), joint_map)


def save_motion(motion: Motion, path: str | os.PathLike) -> Path:
    """Write ``motion`` as an SMPL-X-parameter ``.npz`` (written to a temporary file, then
    renamed, so a crash never leaves a half-written file under the real name), with the
    permissions the umask gives new files (as videos get).

    Keys: the ``SmplxPose`` fields (float32), ``fps``, ``name``, ``source``, ``joint_map``
    (JSON text), ``format`` = ``"ram-avatar-motion"``, ``version``; nothing needs unpickling.
    Values that float32 cannot hold (NaN, inf, beyond +-3.4e38) are refused, not written.
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"motion files are saved as .npz, got {path}")
    check_finite(_values(motion.pose), f"the motion {motion.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = motion.pose.to_numpy() | {
        "fps": np.float64(motion.fps),
        "name": np.str_(motion.name),
        "source": np.str_(motion.source),
        "joint_map": np.str_(json.dumps(motion.joint_map)),
        "format": np.str_(FORMAT_NAME),
        "version": np.int64(FORMAT_VERSION),
    }
    with staged_file(path) as tmp, open(tmp, "wb") as file:
        np.savez(file, **arrays)
    return path


def _values(pose: SmplxPose) -> np.ndarray:
    """(T, 168) every rotation and the translation of each frame, as float32."""
    return torch.cat([pose.full().flatten(1), pose.transl], 1).detach().cpu().float().numpy()


def find_motion_files(folder: str | os.PathLike) -> list[Path]:
    """Every motion file (``.bvh``, ``.npz``, ``.json``) under ``folder``, recursively, sorted;
    hidden files and folders are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"motion folder {folder} does not exist or is not a folder")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in MOTION_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _subject_pose(path: Path):
    """(pose, fps) of a subject dataset: the tracked person's motion."""
    from ram_avatar.data import load_subject

    subject = load_subject(path)
    return subject.pose, subject.fps


def tracked_clip(path: str | os.PathLike, progress: bool = True) -> Path:
    """The subject dataset of the person in a video, tracked once and cached by the file's
    content hash (what ``load_motion`` reads for a video; the animation pipeline also reads its
    face and expressions)."""
    import hashlib

    from ram_avatar.tracking.pipeline import track
    from ram_avatar.weights import cache_dir

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    out = cache_dir() / "tracked" / digest.hexdigest()[:16]
    if not (out / "meta.json").is_file():
        # Driving needs the body only: low resolution keeps tracking quick.
        track(path, out, resolution=256, resume=True, overwrite=True, progress=progress)
    return out


def _tracked_video(path: Path):
    """(pose, fps) of the person in a video (see :func:`tracked_clip`)."""
    return _subject_pose(tracked_clip(path))


def _from_poses(pose_fps: tuple, path: Path, fps: float | None, max_frames: int | None, canonical: bool) -> Motion:
    pose, file_fps = pose_fps
    if pose.batch_size == 0:
        raise MotionFormatError(f"the motion of {path.name} has no frames")
    if canonical:
        pose = canonicalise(pose)
    pose = resample(pose, file_fps, fps or file_fps, max_frames, path.name)
    return Motion(pose, float(fps or file_fps), path.stem, str(path))
