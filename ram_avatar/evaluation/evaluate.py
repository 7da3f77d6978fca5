"""Evaluate a trained avatar on its subject: held-out frames, metrics, pictures, OOD driving.

    evaluate_avatar("runs/me/avatar", "subjects/me", "evals/me")      # or: ram-avatar eval ...

Settings of the paper that a subject dataset allows:

- **Novel in-distribution poses**: the subject's held-out frames (every k-th, the split of
  ``SubjectDataset.split`` that training used), rendered from the same cached input maps the
  trainer evaluates on (``ram_avatar.training.build_map_cache``), with frame t-1's body as the
  temporal attention's previous frame; prediction and ground truth are composited on the
  training background. Metrics (``ram_avatar.metrics``): PSNR, SSIM, LPIPS (alex, vgg), tLPIPS
  over the held-out sequence (consecutive held-out frames are k frames apart), FID when there
  are at least ``fid_min_frames`` held-out frames; full frames, or masked by the GT person mask.
- **Out-of-distribution motion** (``ood_motion``): no ground truth; reported are the MDA OOD
  score before / after alignment (when the avatar has a pose decoder) and temporal stability:
  the mean frame-to-frame LPIPS and mean absolute pixel change of the rendered frames.

Ablations (the paper's Table 3): train one avatar per switch with ``ram-avatar train``'s model
overrides, then evaluate each on the same subject and ``--every-k``::

    ram-avatar train SUBJ runs/full
    ram-avatar train SUBJ runs/no-spatial  --model spatial_attention=false
    ram-avatar train SUBJ runs/no-temporal --model temporal_attention=false
    ram-avatar train SUBJ runs/no-face     --model face_map=false
    ram-avatar train SUBJ runs/no-hand     --model hand_map=false
    for r in full no-spatial no-temporal no-face no-hand; do ram-avatar eval runs/$r/avatar SUBJ evals/$r; done

Each ``evals/<run>/metrics.md`` is one row of the table.

OUT_DIR receives ``metrics.json``, ``metrics.md``, ``per_frame.png``, ``comparisons/*.png``
(GT | ours | error map), ``comparison.mp4`` and, with ``ood_motion``, ``ood.mp4``; it is written
under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ram_avatar.atomic import staged_folder

MEAN_METRICS = ("psnr", "ssim", "lpips_alex", "lpips_vgg", "tlpips", "fid")
PER_FRAME = ("psnr", "ssim", "lpips_alex")
ERROR_GAIN = 4.0  # the error map shows 4 x |ours - GT| (mean over RGB) through a colour map


@dataclass
class EvalResult:
    """What :func:`evaluate_avatar` measured and wrote (``pred`` / ``gt`` / ``mask``: (T, 3|1, H, W))."""

    out_dir: Path
    frames: list[int]
    metrics: dict[str, dict[str, Any]]
    per_frame: dict[str, list[float | None]]
    pred: torch.Tensor
    gt: torch.Tensor
    mask: torch.Tensor
    ood: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def find_network(avatar: str | os.PathLike) -> tuple[Path, Path | None]:
    """(network folder, whole-avatar folder or None) of ``avatar``: a ``ram-avatar train`` network
    folder (config.json), a training OUT_DIR (its ``avatar/``) or a whole-avatar folder (avatar.json)."""
    folder = Path(avatar)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder: pass a trained avatar (ram-avatar train's OUT_DIR/avatar or a saved avatar "
            "folder)"
        )
    if (folder / "avatar.json").is_file():
        return folder / "avatar", folder
    if (folder / "config.json").is_file():
        return folder, None
    if (folder / "avatar" / "config.json").is_file():
        return folder / "avatar", None
    raise FileNotFoundError(
        f"{folder} holds no trained avatar (no config.json, avatar/config.json or avatar.json); train one with "
        "`ram-avatar train`"
    )


def load_network(folder: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The avatar network, of the class its avatar's model_index.json (or its training) names
    (:func:`ram_avatar.pipelines.format.network_class`), and its metrics.json."""
    from ram_avatar.pipelines.format import network_class

    info = (
        json.loads((folder / "metrics.json").read_text(encoding="utf-8")) if (folder / "metrics.json").is_file() else {}
    )
    return network_class(folder).from_pretrained(str(folder)).eval(), info


def held_out_split(subject, every_k: int | None, info: dict[str, Any]) -> tuple[int, list[int]]:  # noqa: ANN001
    """(k, held-out frames): ``every_k`` or the k training held out (its metrics.json), default 10."""
    from ram_avatar.data.subject import SubjectDataset

    trained = info.get("held_out_frames")
    k = every_k or (trained[0] + 1 if trained else 10)
    if trained and every_k and every_k != trained[0] + 1:
        print(
            f"warning: the avatar was trained holding out every {trained[0] + 1}th frame; with --every-k {every_k} "
            "some evaluated frames were seen in training"
        )
    held_out = SubjectDataset(subject).split(k)[1]  # the trainer's rule (images are not decoded here)
    if not held_out:
        raise ValueError(
            f"the subject has {subject.num_frames} frames: none is held out with every_k={k}; pass a smaller --every-k"
        )
    return k, held_out


def render_held_out(
    model: torch.nn.Module,
    subject,
    template,
    frames: list[int],
    background: float,  # noqa: ANN001
    device: torch.device,
    cache_dir: Path,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pred, gt, mask) (T, 3|1, H, W) on the CPU for ``frames``: the trainer's input maps and its
    held-out renderer (``ram_avatar.training.held_out``), so the numbers match training's."""
    from ram_avatar.training import TripletDataset
    from ram_avatar.training.held_out import model_map_cache, render_frames

    cache = model_map_cache(model, subject, template, cache_dir, progress)
    return render_frames(model, TripletDataset(subject, cache, frames, None), device, background, progress=progress)


def per_frame_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None) -> dict[str, list[float | None]]:
    """PSNR, SSIM and LPIPS-alex per frame (None where LPIPS's weights are missing)."""
    from ram_avatar import metrics
    from ram_avatar.weights import WeightsHashMismatch, WeightsUnavailable

    values = {"psnr": metrics.psnr(pred, gt, mask).tolist(), "ssim": metrics.ssim(pred, gt, mask).tolist()}
    try:
        values["lpips_alex"] = metrics.lpips(pred, gt, "alex", mask).tolist()
    except (WeightsUnavailable, WeightsHashMismatch):
        values["lpips_alex"] = [None] * len(pred)
    return values


def mean_metrics(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None, fid_min_frames: int
) -> dict[str, dict[str, Any]]:
    """``metrics.evaluate`` of the sequence; FID only with at least ``fid_min_frames`` frames."""
    from ram_avatar import metrics

    names = tuple(m for m in MEAN_METRICS if m != "fid" or len(pred) >= fid_min_frames)
    results = {name: r.to_dict() for name, r in metrics.evaluate(pred, gt, mask, names).items()}
    if "fid" not in results:
        results["fid"] = metrics.MetricResult(
            None,
            f"FID needs at least {fid_min_frames} held-out frames to mean much, got {len(pred)} (--fid-min-frames)",
        ).to_dict()
    return {name: results[name] for name in MEAN_METRICS}


def person_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, dict[str, Any]]:
    """PSNR / SSIM / LPIPS / tLPIPS over the GT person mask only, always reported beside the main
    metrics: whole frames are mostly background, which flatters a blurry avatar."""
    from ram_avatar import metrics

    names = tuple(m for m in MEAN_METRICS if m != "fid")
    return {name: r.to_dict() for name, r in metrics.evaluate(pred, gt, mask, names).items()}


def temporal_stability(frames: torch.Tensor) -> dict[str, float | None]:
    """Frame-to-frame change of a rendered sequence (T, 3, H, W) in [0, 1], T >= 2: mean LPIPS-alex
    between consecutive frames (None without its weights) and mean absolute pixel change."""
    from ram_avatar import metrics
    from ram_avatar.weights import WeightsHashMismatch, WeightsUnavailable

    if len(frames) < 2:
        raise ValueError("temporal stability needs at least 2 frames")
    try:
        lpips = float(metrics.lpips(frames[1:], frames[:-1]).mean())
    except (WeightsUnavailable, WeightsHashMismatch):
        lpips = None
    return {"frame_lpips": lpips, "pixel_change": float((frames[1:] - frames[:-1]).abs().mean())}


def comparison_image(gt: torch.Tensor, pred: torch.Tensor) -> np.ndarray:
    """(H, 3W, 3) uint8: GT | ours | error map (``ERROR_GAIN`` x mean |ours - GT|, inferno colours)."""
    from matplotlib import colormaps

    error = ((pred - gt).abs().mean(0) * ERROR_GAIN).clamp(0, 1).numpy()
    heat = colormaps["inferno"](error)[..., :3]
    tiles = [gt.permute(1, 2, 0).numpy(), pred.permute(1, 2, 0).numpy(), heat]
    return (np.concatenate(tiles, 1).clip(0, 1) * 255).round().astype(np.uint8)


def plot_per_frame(path: Path, frames: list[int], per_frame: dict[str, list[float | None]], title: str) -> None:
    """PNG with one panel per per-frame metric against the frame index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [name for name in PER_FRAME if any(v is not None for v in per_frame[name])]
    fig, axes = plt.subplots(len(shown), 1, figsize=(7, 2.2 * len(shown)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], shown):
        values = [math.nan if v is None or math.isinf(v) else v for v in per_frame[name]]
        ax.plot(frames, values, marker="o", markersize=3)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("frame")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_table(report: dict[str, Any]) -> str:
    """metrics.md: the mean metrics (and OOD numbers) as Markdown tables."""

    def cell(entry: dict[str, Any]) -> str:
        return f"{entry['value']:.4f}" if entry["value"] is not None else f"n/a ({entry['unavailable']})"

    scope = "masked (person pixels)" if report["masked"] else "whole frame"
    person = report.get("person_metrics", {})
    missing = {"value": None, "unavailable": "not computed"}
    lines = [
        f"# Evaluation of `{report['avatar']}`",
        "",
        (
            f"Subject `{report['subject']}`: {len(report['frames'])} held-out frames (every {report['every_k']}th), "
            f"background {report['background']:g}. *Person only*: over the ground-truth person mask."
        ),
        "",
        f"| metric | {scope} | person only |",
        "|---|---|---|",
        *[
            f"| {name} | {cell(entry)} | {cell(person.get(name, missing)) if name in person else '-'} |"
            for name, entry in report["metrics"].items()
        ],
    ]
    ood = report.get("ood")
    if ood:
        lines += [
            "",
            f"## Out-of-distribution motion `{ood['motion']}` ({ood['frames']} frames, no ground truth)",
            "",
            "| measure | value |",
            "|---|---|",
        ]
        for key in ("ood_before", "ood_after", "frame_lpips", "pixel_change"):
            value = ood.get(key)
            lines.append(f"| {key} | {'n/a' if value is None else f'{value:.4f}'} |")
    return "\n".join(lines) + "\n"


def evaluate_ood(
    avatar: Path,
    whole: Path | None,
    subject_dir: Path,
    motion: str,
    max_frames: int,
    strength: float,
    device: torch.device,
    progress: bool,
) -> tuple[dict[str, Any], np.ndarray]:
    """Drive the avatar with ``motion``: OOD scores (with MDA), temporal stability and the motion's
    frame rate (``fps``, that of the video), and the frames."""
    from ram_avatar.pipelines import RamAvatarPipeline

    if whole is not None:
        pipe = RamAvatarPipeline.from_pretrained(whole, device=device)
    else:
        pipe = RamAvatarPipeline.from_training(subject_dir, avatar, device=device)
    result = pipe(motion, mda_strength=strength, max_frames=max_frames, progress=progress)
    frames = torch.from_numpy(result.frames).permute(0, 3, 1, 2).float() / 255
    report = {
        "motion": str(motion),
        "frames": int(result.num_frames),
        "fps": float(result.fps),
        "mda_strength": strength if pipe.has_mda else None,
        "ood_before": None if result.ood_before is None else float(np.mean(result.ood_before)),
        "ood_after": None if result.ood_after is None else float(np.mean(result.ood_after)),
        **temporal_stability(frames),
    }
    return report, result.frames


def evaluate_avatar(
    avatar: str | os.PathLike,
    subject_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    every_k: int | None = None,
    masked: bool = False,
    ood_motion: str | os.PathLike | None = None,
    ood_frames: int = 120,
    mda_strength: float = 1.0,
    fid_min_frames: int = 50,
    background: float | None = None,
    device: str | torch.device | None = None,
    body_model_path: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``avatar`` on ``subject_dir`` into ``out_dir`` (module docstring).

    Args:
        avatar: ``ram-avatar train``'s OUT_DIR or OUT_DIR/avatar, or a whole-avatar folder.
        every_k: hold out every k-th frame (default: the k the avatar was trained with, else 10).
        masked: metrics over the GT person mask instead of full frames.
        ood_motion: a driving motion file (anything ``ram_avatar.motion.load_motion`` reads).
        ood_frames / mda_strength: frames of it to render; MDA strength when the avatar has MDA.
        fid_min_frames: FID is reported only with at least this many held-out frames.
        background: compositing colour (default: the one the avatar was trained with, else 0).
    """
    from ram_avatar.body import load_template
    from ram_avatar.data import load_subject
    from ram_avatar.device import default_device
    from ram_avatar.pipelines.video import write_video

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "metrics.json").is_file():
        raise FileExistsError(f"{out} exists and is not an evaluation folder: choose another OUT_DIR")
    device = torch.device(device or default_device())
    network, whole = find_network(avatar)
    model, info = load_network(network)
    model = model.to(device)
    subject = load_subject(subject_dir)
    k, frames = held_out_split(subject, every_k, info)
    background = float(info.get("background", 0.0) if background is None else background)
    template = load_template(subject.template.name, device=device, model_path=body_model_path)

    with staged_folder(out) as staging:
        (staging / "comparisons").mkdir()
        with tempfile.TemporaryDirectory(prefix="ram-avatar-eval-") as cache:
            pred, gt, mask = render_held_out(
                model, subject, template, frames, background, device, Path(cache), progress
            )
        metric_mask = mask if masked else None
        per_frame = per_frame_metrics(pred, gt, metric_mask)
        report = {
            "avatar": str(avatar),
            "subject": str(subject_dir),
            "model": type(model).__name__,
            "every_k": k,
            "frames": frames,
            "masked": masked,
            "background": background,
            "metrics": mean_metrics(pred, gt, metric_mask, fid_min_frames),
            "per_frame": per_frame,
        }
        # With --masked the main metrics already are the person-only ones: not computed twice.
        person = (
            {k: v for k, v in report["metrics"].items() if k != "fid"} if masked else person_metrics(pred, gt, mask)
        )
        report["person_metrics"] = person
        import imageio.v3 as iio

        tiles = []
        for t, g, p in zip(frames, gt, pred):
            tiles.append(comparison_image(g, p))
            iio.imwrite(staging / "comparisons" / f"frame_{t:06d}.png", tiles[-1])
        write_video(staging / "comparison.mp4", tiles, subject.fps / k)  # exact: 30 fps, every 4th -> 7.5
        plot_per_frame(staging / "per_frame.png", frames, per_frame, f"{Path(subject_dir).name}: held-out frames")
        ood = None
        if ood_motion is not None:
            ood, rendered = evaluate_ood(
                network, whole, Path(subject_dir), str(ood_motion), ood_frames, mda_strength, device, progress
            )
            write_video(staging / "ood.mp4", rendered, ood["fps"])  # the motion's own rate, as animate writes it
            report["ood"] = ood
        (staging / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (staging / "metrics.md").write_text(markdown_table(report), encoding="utf-8")
    info = {"every_k": k, "background": background, "masked": masked, "person_metrics": report["person_metrics"]}
    return EvalResult(out, frames, report["metrics"], per_frame, pred, gt, mask, ood, info)
