"""Training data: a subject's frames as (t-1, t, t+1) triplets with the avatar's cached input maps.

The input maps of a frame (``ram_avatar.models.inputs``) depend only on its pose, camera and
keypoints, never on the networks, so they are rasterized once per subject and stored as ``.npy``
files (memory-mapped when read) in a cache folder named after a fingerprint of everything they
depend on. Training then only decodes PNGs and slices arrays, which keeps the CPU loop fast.

Item ``i`` of :class:`TripletDataset` is centre frame ``t = centres[i]``:

    index          ()            t
    image, mask    (3 / 1, H, W) GT frame t and its person mask, in [0, 1]
    previous, following, previous_mask, following_mask
                   (3 / 1, H, W) GT frames t-1 and t+1 (the discriminator's real triplet)
    triplet_valid  ()  bool      both neighbours exist and are training frames; when False the
                                 neighbour slots repeat frame t and the GAN terms skip the item
    maps           dict          uv, mask, uv_expanded, mask_expanded (if the model attends
                                 spatially), uv_previous, mask_previous (frame t-1's body, or t's
                                 at the first frame), hand_keypoints (2, 21, 3), face_points (478, 3)

A held-out frame is never a centre of a training set and never a neighbour image (its pose may
still be the "previous" body of the frame after it: poses are inputs, available when driving).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ram_avatar.atomic import staged_folder
from ram_avatar.body.layout import SmplxPose
from ram_avatar.body.template import BodyTemplate
from ram_avatar.data import SubjectData
from ram_avatar.models.hand_map import HAND_KEYPOINTS
from ram_avatar.models.inputs import face_points_from_keypoints, prepare_inputs
from ram_avatar.render import Camera

CACHE_VERSION = 1
MAP_KEYS = ("uv", "mask", "uv_expanded", "mask_expanded", "hand_keypoints", "face_points")


def frame_params(
    subject: SubjectData, frames: slice | list[int], device: torch.device
) -> tuple[SmplxPose, Camera, torch.Tensor]:
    """Pose, cameras and expression of ``frames`` (a slice or frame indices) as tensors on ``device``."""
    pose = subject.pose[frames].to(device=device, dtype=torch.float32)  # only these frames, never the whole clip
    camera = subject.camera
    tensor = lambda a: torch.as_tensor(np.asarray(a[frames], np.float32), device=device)  # noqa: E731
    cameras = Camera(tensor(camera.K), tensor(camera.R), tensor(camera.t), subject.image_size)
    return pose, cameras, tensor(subject.expression)


def subject_shape(subject: SubjectData, device: torch.device) -> torch.Tensor:
    """(1, S) the subject's shape parameters as a tensor on ``device``."""
    return torch.as_tensor(np.asarray(subject.shape, np.float32), device=device)[None]


def subject_offsets(subject: SubjectData, device: torch.device) -> torch.Tensor | None:
    """The subject's surface offsets (V,) as a tensor on ``device``, or None when it has none."""
    return None if subject.offsets is None else torch.as_tensor(np.asarray(subject.offsets, np.float32), device=device)


def detected_hands(subject: SubjectData, frames: slice, template_hands: torch.Tensor) -> torch.Tensor:
    """(B, 2, 21, 3) the subject's detected hand keypoints; a hand not detected in a frame (all
    confidences 0) takes the posed template's projected hand instead, so the hand map is never
    empty where the body has a hand. Subjects without 21-point hands use the template's."""
    left, right = subject.keypoints.get("left_hand"), subject.keypoints.get("right_hand")
    if left is None or right is None or left.shape[1] != HAND_KEYPOINTS or right.shape[1] != HAND_KEYPOINTS:
        return template_hands
    detected = torch.as_tensor(np.stack([left[frames], right[frames]], 1), dtype=template_hands.dtype)
    detected = detected.to(template_hands.device)
    seen = (detected[..., 2] > 0).any(-1)[..., None, None]  # (B, 2, 1, 1)
    return torch.where(seen, detected, template_hands)


def _fingerprint(subject: SubjectData, settings: dict) -> str:
    """Hash of everything the maps depend on: pose, shape, expression, cameras, keypoints, settings."""
    digest = hashlib.sha256(json.dumps({**settings, "version": CACHE_VERSION}, sort_keys=True).encode())
    camera = subject.camera
    arrays = [*subject.pose.to_numpy().values(), subject.shape, subject.expression, camera.K, camera.R, camera.t]
    arrays += [] if subject.offsets is None else [subject.offsets]
    arrays += [subject.keypoints[k] for k in sorted(subject.keypoints)]
    for array in arrays:
        digest.update(np.ascontiguousarray(array, np.float32).tobytes())
    return digest.hexdigest()[:16]


def build_map_cache(
    subject: SubjectData,
    template: BodyTemplate,
    cache_root: str | os.PathLike,
    *,
    expand_distance: float,
    attention_downsample: int,
    expanded: bool,
    batch_size: int = 8,
    progress: bool = True,
) -> Path:
    """Rasterize every frame's input maps once; returns the cache folder (reused when it exists).

    The folder ``cache_root/maps-<fingerprint>`` holds one ``.npy`` per map key with a leading
    frame axis (N, ...); it is written under a temporary name and renamed into place, so a
    half-built cache is never used. Rasterizing runs on the template's device.
    """
    settings = {
        "template": template.name,
        "image_size": list(subject.image_size),
        "expand_distance": expand_distance,
        "attention_downsample": attention_downsample,
        "expanded": expanded,
    }
    folder = Path(cache_root) / f"maps-{_fingerprint(subject, settings)}"
    if folder.is_dir():
        return folder
    with staged_folder(folder) as staging:  # renamed into place whole; removed on any error
        N, device = subject.num_frames, template.faces.device
        shape = subject_shape(subject, device)
        offsets = subject_offsets(subject, device)
        arrays: dict[str, np.ndarray] = {}
        for start in tqdm(range(0, N, batch_size), desc="input maps", disable=not progress, leave=False):
            frames = slice(start, min(start + batch_size, N))
            pose, camera, expression = frame_params(subject, frames, device)
            face = torch.as_tensor(np.asarray(subject.keypoints["face"][frames], np.float32), device=device)
            mesh = subject.keypoints.get("face_mesh")
            mesh = None if mesh is None else torch.as_tensor(np.asarray(mesh[frames], np.float32), device=device)
            maps = prepare_inputs(
                template,
                pose,
                camera,
                shape=shape,
                expression=expression,
                face_points=face_points_from_keypoints(face, mesh),
                offsets=offsets,
                expand_distance=expand_distance,
                attention_downsample=attention_downsample,
                expanded=expanded,
            )
            maps["hand_keypoints"] = detected_hands(subject, frames, maps["hand_keypoints"])
            for key, value in maps.items():
                if key not in arrays:  # memory-mapped output, so a long clip never sits in RAM at once
                    arrays[key] = np.lib.format.open_memmap(
                        staging / f"{key}.npy", "w+", value.cpu().numpy().dtype, (N, *value.shape[1:])
                    )
                arrays[key][frames] = value.cpu().numpy()
        for array in arrays.values():
            array.flush()
        (staging / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return folder


def _image(sequence, index: int) -> torch.Tensor:
    """A uint8 (H, W, 3) or (H, W) frame -> float (C, H, W) in [0, 1]."""
    array = torch.from_numpy(np.asarray(sequence[index]))
    return (array.permute(2, 0, 1) if array.dim() == 3 else array[None]).float() / 255


class TripletDataset(torch.utils.data.Dataset):
    """Centre frames ``centres`` of ``subject`` with neighbours and cached maps (module docstring).

    Args:
        subject: the loaded subject (lazy frames are fine: PNGs are decoded per item).
        cache: folder from :func:`build_map_cache` for this subject.
        centres: the frames this dataset serves (training frames, or held-out ones to evaluate).
        train_frames: frames whose images may be used as neighbours (the training split); with
            ``None`` no neighbour images are loaded (evaluation).
    """

    def __init__(
        self, subject: SubjectData, cache: str | os.PathLike, centres: list[int], train_frames: list[int] | None
    ):
        self.subject = subject
        self.cache = Path(cache)
        self.centres = list(centres)
        self.train_frames = None if train_frames is None else frozenset(train_frames)
        self.keys = [key for key in MAP_KEYS if (self.cache / f"{key}.npy").is_file()]
        self._maps: dict[str, np.ndarray] | None = None  # opened on first use, in each worker

    def __len__(self) -> int:
        return len(self.centres)

    def _arrays(self) -> dict[str, np.ndarray]:
        if self._maps is None:
            self._maps = {key: np.load(self.cache / f"{key}.npy", mmap_mode="r") for key in self.keys}
        return self._maps

    def __getitem__(self, i: int) -> dict:
        t, N = self.centres[i], self.subject.num_frames
        arrays = self._arrays()
        maps = {key: torch.from_numpy(np.array(arrays[key][t])) for key in self.keys}
        previous = max(t - 1, 0)
        maps["uv_previous"], maps["mask_previous"] = (
            torch.from_numpy(np.array(arrays[k][previous])) for k in ("uv", "mask")
        )
        item = {"index": torch.tensor(t), "maps": maps}
        item["image"], item["mask"] = _image(self.subject.frames, t), _image(self.subject.masks, t)
        if self.train_frames is not None:
            valid = 0 < t < N - 1 and {t - 1, t + 1} <= self.train_frames
            for name, j in (("previous", t - 1), ("following", t + 1)):
                frame, mask = (
                    (_image(self.subject.frames, j), _image(self.subject.masks, j))
                    if valid
                    else (item["image"], item["mask"])
                )
                item[name], item[f"{name}_mask"] = frame, mask
            item["triplet_valid"] = torch.tensor(valid)
        return item


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches of dataset positions drawn with replacement, a pure function of (seed, step).

    The batch of step ``s`` does not depend on anything that happened before it, so a resumed run
    draws exactly the batches the uninterrupted run would have, without saving sampler state.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int = 0):
        self.size, self.batch_size, self.seed, self.start_step = size, batch_size, seed, start_step

    def batch(self, step: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return torch.randint(self.size, (self.batch_size,), generator=generator).tolist()

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1
