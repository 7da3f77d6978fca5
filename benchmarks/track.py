"""Tracking benchmark: frames/s of each stage of ``ram-avatar track`` on the CPU, and fit quality.

    python benchmarks/track.py [--max-frames 30] [--resolution 512] [--threads N] [clip ...]

Runs the real command (``ram_avatar.tracking.pipeline.track``) on each clip (default: the shared
single-person clips in ../shared/data/video) into a temporary folder, timing each stage by
wrapping the functions it calls, and prints the machine, then one row per clip:

    detect      decoding (both passes) + MediaPipe Holistic + the other-person check
    crop/mask   cropping each frame and refining its person mask (the second pass's work)
    fit         the body template fitted to the keypoints and masks (``fit_body``)
    face        the face landmark mesh and the facial actions (``faces``: frames with a face)
    preview     preview.mp4 (the template rendered over every frame)
    write       the subject dataset written to disk
    total       frames / seconds of the whole command (template loading excluded)

as frames per second, and the fit quality: median body and hand reprojection error (px at the
crop resolution) and the median IoU of the fitted template's silhouette with the person mask.
A second table splits the fit into its stages (iterations run, milliseconds per iteration).

One run per clip (a full run takes a minute or so): rerun to see the spread. On a machine
shared with other jobs, ``--threads 1`` can be several times faster than torch's default (its
worker threads then wait for each other on every small operation).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's start-up log lines, not errors

import numpy as np
import torch

from ram_avatar.body import load_template
from ram_avatar.device import device_name
from ram_avatar.tracking import detect, fit, pipeline

VIDEO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "video"
CLIPS = (
    "pose2sim_single_cam01_static_1p67s.mp4",  # 1080x1920 H.264
    "pose2sim_single_cam02_static_1p67s.mp4",  # 1080x1920 VP9
    "pose2sim_single_cam03_static_1p67s.mp4",
    "pose2sim_single_cam04_static_1p67s.mp4",
    "tfjs_synthetic_dance_static_576.mp4",  # 576x576, a dancer
)
STAGES = ("detect", "crop/mask", "fit", "face", "preview", "write")
# The functions each stage's time is spent in (module, attribute), as ``track`` calls them.
TIMED = {
    "detect_clip": [(pipeline, "detect_clip")],
    "crop/mask": [(detect, "crop_image"), (detect, "warp_to_crop"), (detect, "refine_mask")],
    "fit": [(pipeline, "fit_body")],
    "face": [(pipeline, "lift_face_mesh"), (pipeline, "fit_expressions"), (pipeline, "split_jaw")],
    "preview": [(pipeline, "write_preview")],
    "write": [(pipeline, "write_subject")],
}


@contextmanager
def stopwatch(seconds: dict[str, float], name: str, owner: object, attribute: str) -> Iterator[None]:
    """Add the time spent in ``owner.attribute(...)`` to ``seconds[name]`` while inside."""
    original: Callable = getattr(owner, attribute)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - start

    setattr(owner, attribute, timed)
    try:
        yield
    finally:
        setattr(owner, attribute, original)


@contextmanager
def fit_stage_timer(record: dict[str, tuple[int, float]]) -> Iterator[None]:
    """Record (iterations run, seconds) of each fit stage (``fit._run_stage``) while inside."""
    run = fit._run_stage

    def timed(problem, stage, iters, progress):
        start = time.perf_counter()
        curve = run(problem, stage, iters, progress)
        record[stage] = (len(curve), time.perf_counter() - start)
        return curve

    fit._run_stage = timed
    try:
        yield
    finally:
        fit._run_stage = run


def bench_clip(clip: Path, resolution: int, max_frames: int, fit_iters: int | None) -> dict:
    """Track ``clip`` once: frames, seconds per stage and in all, the summary, fit-stage timings."""
    seconds: dict[str, float] = defaultdict(float)
    fit_stages: dict[str, tuple[int, float]] = {}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(), ExitStack() as stack:
        warnings.simplefilter("ignore")  # e.g. another person in view: not what is measured
        for name, targets in TIMED.items():
            for owner, attribute in targets:
                stack.enter_context(stopwatch(seconds, name, owner, attribute))
        stack.enter_context(fit_stage_timer(fit_stages))
        start = time.perf_counter()
        summary = pipeline.track(
            clip,
            Path(folder) / "subject",
            resolution=resolution,
            max_frames=max_frames,
            device="cpu",
            fit_iters=fit_iters,
            progress=False,
        )
        total = time.perf_counter() - start
    seconds["detect"] = seconds.pop("detect_clip") - seconds["crop/mask"]
    return {
        "frames": summary.num_frames,
        "seconds": seconds,
        "total": total,
        "summary": summary,
        "fit_stages": fit_stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clips", nargs="*", type=Path, help="videos (default: the shared single-person clips)")
    parser.add_argument("--max-frames", type=int, default=30, help="frames per clip (default 30)")
    parser.add_argument("--resolution", type=int, default=512, help="crop side (default 512)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--fit-iters", type=int, default=None, help="cap per fit stage (default: none)")
    args = parser.parse_args()
    clips = args.clips or [VIDEO / clip for clip in CLIPS]
    missing = [str(c) for c in clips if not c.exists()]
    if missing:
        raise SystemExit(f"missing clips: {', '.join(missing)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"machine: {device_name('cpu')}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.max_frames} frames per "
        f"clip, {args.resolution}^2 crops, one run each; frames/s per stage:"
    )
    load_template("anny", device="cpu")  # built once per process: not part of any clip's time
    columns = (*STAGES, "total")
    print(
        f"{'clip':<40}{'N':>4}"
        + "".join(f"{c:>10}" for c in columns)
        + f"{'faces':>6}{'body px':>9}{'hand px':>9}{'IoU':>6}"
    )
    results = {}
    for clip in clips:
        result = bench_clip(clip, args.resolution, args.max_frames, args.fit_iters)
        results[clip.name] = result
        N, seconds, s = result["frames"], result["seconds"], result["summary"]
        rates = [N / seconds[stage] for stage in STAGES] + [N / result["total"]]
        print(
            f"{clip.name[:39]:<40}{N:>4}"
            + "".join(f"{r:>10.1f}" for r in rates)
            + f"{s.face_frames:>6}{s.body_error_px:>9.2f}{s.hand_error_px:>9.2f}{s.mask_iou:>6.2f}",
            flush=True,
        )

    print("\nfit stages: iterations run / milliseconds per iteration")
    print(f"{'clip':<40}" + "".join(f"{stage:>16}" for stage in fit.STAGES))
    for name, result in results.items():
        cells = []
        for stage in fit.STAGES:
            iters, sec = result["fit_stages"].get(stage, (0, 0.0))
            cells.append(f"{iters:>6} / {1e3 * sec / max(iters, 1):>6.0f}" if iters else f"{'-':>16}")
        print(f"{name[:39]:<40}" + "".join(f"{c:>16}" for c in cells))
    body = [r["summary"].body_error_px for r in results.values()]
    print(f"\nmedian body reprojection error over the clips: {np.median(body):.2f} px at {args.resolution}^2")


if __name__ == "__main__":
    main()
