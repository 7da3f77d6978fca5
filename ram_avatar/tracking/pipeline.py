"""``ram-avatar track``: a monocular clip -> a subject dataset, in resumable stages.

Stages, each saved into a work folder ``.OUT.tracking/`` beside the output when it finishes,
so that ``resume=True`` skips the finished ones after a crash or Ctrl-C:

1. ``detect``  decode, MediaPipe Holistic, square crops, refined person masks
   (:func:`~ram_avatar.tracking.detect.detect_clip`);
2. ``fit``     the body template fitted to the keypoints and masks (:mod:`.fit`);
3. ``face``    the 3D face landmark mesh and the template's facial actions (:mod:`.face`);
4. ``surface`` per-vertex offsets along the normals for clothes, hair and build (:mod:`.surface`);
5. ``align``   per-frame pose corrections that line the textured template up with the frame's
   pixels (:mod:`.align`).

Then the subject dataset is written atomically (:func:`ram_avatar.data.write_subject`), with a
``preview.mp4`` (detections | fitted template over each frame) and ``fit_errors.csv`` beside
it, and the work folder is removed. Nothing is written under ``OUT`` until everything succeeded.
A run that fails keeps the work folder only when it holds a finished stage (for ``resume``);
half-written files never stay (see :mod:`ram_avatar.atomic`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from ram_avatar import __version__
from ram_avatar.atomic import check_output, remove_stale, removed_if_new, staged_file
from ram_avatar.body import BodyTemplate, SmplxPose, load_template
from ram_avatar.body.layout import JOINT_NAMES
from ram_avatar.data import CameraTrack, SubjectData, TemplateInfo, write_subject
from ram_avatar.pipelines.video import VideoWriter
from ram_avatar.render import Camera, interpolate, rasterize
from ram_avatar.tracking.align import CORRECTED, align_poses
from ram_avatar.tracking.detect import Detections, detect_clip
from ram_avatar.tracking.face import fit_expressions, lift_face_mesh, split_jaw
from ram_avatar.tracking.fit import fit_body
from ram_avatar.tracking.surface import fit_surface_offsets

PREVIEW_FILE = "preview.mp4"
ERRORS_FILE = "fit_errors.csv"
STAGES = ("detect.npz", "fit.npz", "face.npz")


@dataclass
class TrackingSummary:
    """What ``track`` did, for printing: the output and the fit quality in numbers."""

    path: Path
    num_frames: int
    body_error_px: float  # median over frames of the per-frame median body reprojection error
    hand_error_px: float  # the same over frames and hands where a hand was detected (NaN: never)
    mask_iou: float  # median IoU of the fitted template's silhouette and the person mask
    face_frames: int  # frames with a detected face


def _save(path: Path, **arrays) -> None:
    """``np.savez`` written to a temporary name and renamed, so a stage file is whole or absent."""
    with staged_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _detections_arrays(d: Detections) -> dict[str, np.ndarray]:
    info = {
        "fps": d.fps,
        "source_size": list(d.source_size),
        "source_video": d.source_video,
        "multi_person_frames": d.multi_person_frames,
        "switch_frames": d.switch_frames,
        "layouts": d.layouts,
    }
    return {
        "frames": d.frames,
        "masks": d.masks,
        "crop_boxes": d.crop_boxes,
        "K": d.K,
        "frame_indices": d.frame_indices,
        "info": np.array(json.dumps(info)),
        **{f"kp_{k}": v for k, v in d.keypoints.items()},
        **{f"found_{k}": v for k, v in d.found.items()},
    }


def _detections_from(arrays: dict[str, np.ndarray]) -> Detections:
    info = json.loads(str(arrays["info"]))
    return Detections(
        frames=arrays["frames"],
        masks=arrays["masks"],
        keypoints={k[3:]: v for k, v in arrays.items() if k.startswith("kp_")},
        crop_boxes=arrays["crop_boxes"],
        K=arrays["K"],
        fps=info["fps"],
        source_size=tuple(info["source_size"]),
        frame_indices=arrays["frame_indices"],
        found={k[6:]: v for k, v in arrays.items() if k.startswith("found_")},
        multi_person_frames=info["multi_person_frames"],
        switch_frames=info["switch_frames"],
        source_video=info["source_video"],
        layouts=info["layouts"],
    )


def template_info(template: BodyTemplate) -> TemplateInfo:
    """How the dataset names ``template``'s shape and expression spaces (docs/subject_format.md)."""
    if template.name == "anny":
        return TemplateInfo(
            "anny",
            f"anny-phenotype-{template.shape_dim}",
            f"anny-arkit-{template.expression_dim}",
            list(template.shape_labels),
            list(template.expression_labels),
        )
    return TemplateInfo(
        template.name,
        f"{template.name}-betas-{template.shape_dim}",
        f"{template.name}-expression-{template.expression_dim}",
    )


def _shade(template: BodyTemplate, vertices: torch.Tensor, normals: torch.Tensor, camera: Camera):
    """Shaded template colours (1, H, W, 3) uint8 and its silhouette (1, H, W) bool."""
    from ram_avatar.demo import shade

    fragments = rasterize(vertices, template.faces, camera, camera.image_size)
    canonical = interpolate(fragments, template.faces, template.canonical)
    normals_cam = interpolate(fragments, template.faces, normals @ camera.R[0].T)
    return shade(canonical, fragments.mask, normals_cam), fragments.mask


_COLOURS = {"body": (0, 255, 0), "left_hand": (255, 80, 80), "right_hand": (80, 160, 255), "face": (255, 255, 255)}


def _draw_keypoints(image: np.ndarray, keypoints: dict[str, np.ndarray], row: int) -> np.ndarray:
    image = image.copy()
    radius = max(1, image.shape[0] // 160)
    for name, colour in _COLOURS.items():
        points = keypoints[name][row]
        step = 4 if name == "face" else 1  # every 4th face point keeps the face readable
        for x, y, conf in points[::step]:
            if conf > 0:
                cv2.circle(image, (int(x), int(y)), radius if name != "face" else 1, colour, -1, cv2.LINE_AA)
    return image


@torch.no_grad()
def write_preview(
    path: Path,
    template: BodyTemplate,
    detections: Detections,
    pose: SmplxPose,
    shape: torch.Tensor,
    expression: torch.Tensor,
    offsets: torch.Tensor | None,
    camera: Camera,
    progress: bool = True,
) -> np.ndarray:
    """Write the preview video (keypoints | template overlay) at the clip's exact frame rate, frame
    by frame, and return the per-frame mask IoU (N,)."""
    frames, masks = detections.frames, detections.masks
    iou = np.zeros(len(frames), np.float32)
    with VideoWriter(path, detections.fps) as video:
        for i in tqdm(range(len(frames)), desc="preview", unit="frame", disable=not progress):
            body = template(pose[i : i + 1], shape[None], expression[i : i + 1], offsets)
            colours, silhouette = _shade(template, body.vertices, body.normals, camera[i : i + 1])
            silhouette = silhouette[0].cpu().numpy()
            person = masks[i] > 127
            iou[i] = (silhouette & person).sum() / max((silhouette | person).sum(), 1)
            blend = frames[i].astype(np.float32)
            alpha = 0.6 * silhouette[..., None]
            overlay = (blend * (1 - alpha) + colours[0].cpu().numpy() * alpha).astype(np.uint8)
            video.write(np.concatenate([_draw_keypoints(frames[i], detections.keypoints, i), overlay], axis=1))
    return iou


def _write_errors(path: Path, detections: Detections, errors: dict[str, np.ndarray]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["frame", "source_frame", *errors, "face_found"])
    for i in range(len(detections.frames)):
        values = [f"{errors[k][i]:.2f}" if np.isfinite(errors[k][i]) else "" for k in errors]
        writer.writerow([i, int(detections.frame_indices[i]), *values, int(detections.found["face"][i])])
    with staged_file(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")


@contextmanager
def _resumable(work: Path) -> Iterator[None]:
    """On any error (Ctrl-C included) keep the work folder only when it holds a finished stage,
    saying how to resume from it; else remove it, leaving the disk as it was."""
    try:
        yield
    except BaseException as error:
        if any((work / name).is_file() for name in STAGES):
            error.add_note(f"(the finished stages are kept in {work}: rerun with --resume to continue from them)")
        else:
            shutil.rmtree(work, ignore_errors=True)
        raise


def track(
    clip: str | os.PathLike,
    out_dir: str | os.PathLike,
    body_template: str = "anny",
    body_model_path: str | None = None,
    resolution: int = 512,
    max_frames: int | None = None,
    fps: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    fit_iters: int | None = None,
    progress: bool = True,
) -> TrackingSummary:
    """Track the person in ``clip`` and write a subject dataset at ``out_dir``.

    Args:
        clip: any video PyAV decodes (H.264, VP9, ... incl. rotated portrait video).
        out_dir: the subject dataset to write (docs/subject_format.md), plus ``preview.mp4``
            and ``fit_errors.csv`` (reprojection errors in crop pixels per frame).
        body_template: ``"anny"`` (default) or ``"smplx"`` (needs ``body_model_path``).
        resolution: side of the square crops, pixels (even, >= 64).
        max_frames, fps: keep at most this many frames, resampled to this rate.
        resume: reuse the stages a previous, interrupted run with the same settings finished.
        overwrite: replace an existing subject dataset at ``out_dir``.
        device: where the fit runs (default: CUDA if present).
        fit_iters: cap on each fitting stage's iterations (quick previews and tests).

    Raises:
        TrackingError: unreadable / empty / still-image clip, nobody found, too few frames.
        FileNotFoundError: no ``clip``.
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False.
        OSError: ``out_dir`` cannot be written (checked first), or writing failed (a full disk).
    """
    from ram_avatar.device import default_device

    clip, out = Path(clip), Path(out_dir)
    if resolution < 64 or resolution % 2:
        raise ValueError(f"resolution must be an even number of pixels >= 64, got {resolution}")
    if not clip.exists():
        raise FileNotFoundError(f"the clip {clip} does not exist: check the path")
    check_output(out, "folder")
    if out.exists() and not overwrite and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists: choose another folder or pass --overwrite to replace it")
    remove_stale(out)  # a dataset half-written by a killed run
    work = out.parent / f".{out.name}.tracking"
    with removed_if_new(work.parent), _resumable(work):
        settings = {
            "clip": str(clip.resolve()),
            "size": clip.stat().st_size if clip.is_file() else None,
            "resolution": resolution,
            "max_frames": max_frames,
            "fps": fps,
            "body_template": body_template,
            "fit_iters": fit_iters,
            "version": __version__,
        }
        settings_file = work / "settings.json"
        resumable = resume and settings_file.is_file() and json.loads(settings_file.read_text()) == settings
        if work.exists() and not resumable:
            shutil.rmtree(work)  # a different (or no) resume: start over
        work.mkdir(parents=True, exist_ok=True)
        settings_file.write_text(json.dumps(settings))

        stage = work / "detect.npz"
        if stage.is_file():
            detections = _detections_from(_load(stage))
        else:
            detections = detect_clip(clip, resolution=resolution, max_frames=max_frames, fps=fps, progress=progress)
            _save(stage, **_detections_arrays(detections))

        device = torch.device(device or default_device())
        template = load_template(body_template, device=device, model_path=body_model_path)
        N = len(detections.frames)
        stage = work / "fit.npz"
        if not stage.is_file():
            result = fit_body(
                template,
                detections.keypoints,
                detections.K,
                resolution,
                detections.masks,
                max_iters=fit_iters,
                progress=progress,
            )
            _save(
                stage,
                **{f"pose_{k}": v for k, v in result.pose.to_numpy().items()},
                shape=result.shape.cpu().numpy(),
                K=result.K.cpu().numpy(),
                R=result.R.cpu().numpy(),
                t=result.t.cpu().numpy(),
                body_px=result.body_error,
                left_hand_px=result.left_hand_error,
                right_hand_px=result.right_hand_error,
            )
        fit = _load(stage)
        pose = SmplxPose.from_numpy({k[5:]: v for k, v in fit.items() if k.startswith("pose_")}).to(device)
        shape = torch.as_tensor(fit["shape"], device=device)
        camera = Camera(*(torch.as_tensor(fit[k], device=device) for k in ("K", "R", "t")), (resolution, resolution))

        stage = work / "face.npz"
        if not stage.is_file():
            with torch.no_grad():
                joints = template(pose, shape[None]).joints  # (N, 55, 3)
                head = camera.world_to_camera(joints[:, JOINT_NAMES.index("head")][:, None])[:, 0, 2]
            face = detections.keypoints["face"]
            face_mesh = lift_face_mesh(face, detections.keypoints["face_z"], detections.K, head.cpu().numpy())
            actions = fit_expressions(template, face_mesh, detections.found["face"])
            jaw = np.zeros((N, 3), np.float32)
            if template.name == "anny":
                jaw, actions = split_jaw(template, actions)
            _save(stage, face_mesh=face_mesh, expression=actions, jaw=jaw)
        face = _load(stage)
        pose.jaw_pose = torch.as_tensor(face["jaw"], device=device)
        expression = torch.as_tensor(face["expression"], device=device)

        stage = work / "surface.npz"
        if not stage.is_file():
            offsets = fit_surface_offsets(
                template, pose, shape, camera, detections.masks, expression, max_iters=fit_iters, progress=progress
            )
            _save(stage, offsets=offsets)
        offsets = _load(stage)["offsets"]

        stage = work / "align.npz"
        if not stage.is_file():
            aligned = align_poses(
                template,
                pose,
                shape,
                camera,
                detections.frames,
                detections.masks,
                expression,
                torch.as_tensor(offsets, device=device),
                max_iters=fit_iters,
                progress=progress,
            )
            _save(stage, **{k: getattr(aligned, k).cpu().numpy() for k in CORRECTED})
        for name, value in _load(stage).items():
            setattr(pose, name, torch.as_tensor(value, device=device))

        subject = SubjectData(
            frames=detections.frames,
            masks=detections.masks,
            pose=pose.to("cpu"),
            shape=fit["shape"].astype(np.float32),
            expression=face["expression"].astype(np.float32),
            camera=CameraTrack(K=fit["K"], R=fit["R"], t=fit["t"], crop_boxes=detections.crop_boxes),
            keypoints={k: detections.keypoints[k] for k in ("body", "left_hand", "right_hand", "face")}
            | {"face_mesh": face["face_mesh"]},
            template=template_info(template),
            keypoint_layouts=detections.layouts,
            fps=detections.fps,
            source_video=clip.name,
            source_size=tuple(detections.source_size),
            frame_indices=[int(i) for i in detections.frame_indices],
            offsets=offsets,
        )
        offsets = torch.as_tensor(offsets, device=device)
        iou = write_preview(
            work / PREVIEW_FILE, template, detections, pose, shape, expression, offsets, camera, progress
        )
        errors = {
            "body_px": fit["body_px"],
            "left_hand_px": fit["left_hand_px"],
            "right_hand_px": fit["right_hand_px"],
            "mask_iou": iou,
        }
        _write_errors(work / ERRORS_FILE, detections, errors)
        write_subject(out, subject, overwrite=overwrite)
        for name in (PREVIEW_FILE, ERRORS_FILE):
            (work / name).replace(out / name)
        shutil.rmtree(work)
        hands = np.concatenate([fit["left_hand_px"], fit["right_hand_px"]])
        return TrackingSummary(
            path=out,
            num_frames=N,
            body_error_px=float(np.nanmedian(fit["body_px"])),
            hand_error_px=float(np.nanmedian(hands)) if np.isfinite(hands).any() else float("nan"),
            mask_iou=float(np.median(iou)),
            face_frames=int(detections.found["face"].sum()),
        )
