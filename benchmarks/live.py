"""Live driving speed: shared clips played at their own fps through the live loop, as if they were cameras.

    python benchmarks/live.py [--avatar examples/avatars/dancer-rt256] [--clips NAME ...] [--runs 3]
                              [--strength 0.5] [--threads N]

Each clip (default: ``pose2sim_single_cam01_static_1p67s.mp4``, 1080x1920 at 60 fps, 100 frames,
and ``tfjs_synthetic_dance_static_576.mp4``, 576x576 at 30 fps, 120 frames, from
``../shared/data/video``) is played ``--runs`` times through :class:`LiveLoop` exactly as
``ram-avatar live --source CLIP`` plays it (:class:`ClipSource`: frames downscaled to 720 px,
those whose time has passed skipped), the session reset between runs, except that the clip is
decoded before it plays: a camera hands over decoded frames, while decoding the 60 fps 1080p clip
as it plays would take about a third of a core that a camera does not. The sink encodes each
avatar frame to H.264 (as a recording or a stream of the output would), and nothing else.

Printed per clip, over all its runs: output FPS (avatar frames per second of camera time; the
median run), median and p95 latency (capture -> avatar frame rendered, before encoding),
camera frames skipped (the detection thread was busy when their time passed) and dropped (solved,
but the renderer took a newer one), the process's CPU use (cores), and per stage the median and
p95 ms per call: detect (downscale to 384 px + MediaPipe Holistic), solve (LivePoseSolver: body,
hands, face, filter), mda, render (posing, rasterizing, the network) and encode. Detect and
solve run on one thread, mda, render and encode on the other, each with one PyTorch thread.
On a machine shared with other work, read the CPU use beside the frame rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ram_avatar.device import device_name, keep_freed_memory
from ram_avatar.pipelines import RamAvatarPipeline
from ram_avatar.pipelines.live import ClipSource, LiveFrame, LiveLoop, LiveSession, LiveStats
from ram_avatar.pipelines.video import VideoWriter

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT / ".." / "shared" / "data" / "video"
CLIPS = ("pose2sim_single_cam01_static_1p67s.mp4", "tfjs_synthetic_dance_static_576.mp4")
STAGES = ("detect", "solve", "mda", "render", "encode")


class Encode:
    """The sink: each avatar frame to H.264 on one thread (``VideoWriter``, as ``animate`` writes)."""

    def __init__(self, path: Path, fps: float):
        self.writer = VideoWriter(path, fps, threads=1)

    def __call__(self, frame: LiveFrame) -> bool:
        if frame.avatar is not None:
            self.writer.write(frame.avatar.image)
        return True

    def close(self) -> None:
        if self.writer.count:
            self.writer.close()
        else:
            self.writer.abort()


def play(clip: Path, session: LiveSession, folder: str) -> tuple[LiveStats, float]:
    """One run of the clip through the loop: its stats and the CPU seconds the process used."""
    source = ClipSource(clip, preload=True)
    sink = Encode(Path(folder) / "live.mp4", source.fps)
    session.warm_up(source.size)  # also a reset: each run starts afresh
    cpu = time.process_time()
    try:
        stats = LiveLoop(source, session, sink).run()
    finally:
        sink.close()
    stats.stages["encode"] = stats.stages.pop("output")
    return stats, time.process_time() - cpu


def report(name: str, runs: list[tuple[LiveStats, float]]) -> None:
    stats = [s for s, _ in runs]
    latency = 1000 * np.concatenate([s.latency for s in stats]) if any(s.latency for s in stats) else np.zeros(1)
    frames = sum(s.frames + s.skipped for s in stats)
    print(f"\n{name}: {len(runs)} runs, {frames} camera frames")
    fps = [s.fps for s in stats]
    print(f"  output        {np.median(fps):.1f} FPS (runs: {', '.join(f'{f:.1f}' for f in fps)})")
    print(f"  latency       median {np.median(latency):.0f} ms, p95 {np.percentile(latency, 95):.0f} ms")
    print(
        f"  rendered      {sum(s.rendered for s in stats)}; skipped by the camera {sum(s.skipped for s in stats)}, "
        f"dropped {sum(s.dropped for s in stats)}, nobody in view {sum(s.unseen for s in stats)}"
    )
    print(f"  CPU use       {sum(c for _, c in runs) / sum(s.seconds for s in stats):.2f} cores")
    print(f"  {'stage':<12}{'median ms':>10}{'p95 ms':>9}{'calls':>7}")
    for stage in STAGES:
        times = 1000 * np.asarray([t for s in stats for t in s.stages[stage]])
        if len(times):
            print(f"  {stage:<12}{np.median(times):>10.1f}{np.percentile(times, 95):>9.1f}{len(times):>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--avatar", default=str(ROOT / "examples" / "avatars" / "dancer-rt256"))
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), help="files in ../shared/data/video, or paths")
    parser.add_argument("--runs", type=int, default=3, help="plays of each clip (default 3)")
    parser.add_argument("--strength", type=float, default=0.5, help="MDA strength (default 0.5)")
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (the loop's threads share them)")
    args = parser.parse_args()
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    clips = [Path(c) if Path(c).is_file() else VIDEOS / c for c in args.clips]
    missing = [c.name for c in clips if not c.is_file()]
    if missing:
        sys.exit(f"clips not found: {', '.join(missing)} (../shared/data/video is absent?)")
    pipe = RamAvatarPipeline.from_pretrained(args.avatar, device="cpu")
    session = LiveSession(pipe, mda_strength=args.strength)
    print(
        f"{pipe.name} ({pipe.image_size[1]}x{pipe.image_size[0]}, MDA {'on' if pipe.has_mda else 'off'}) on "
        f"{device_name('cpu')}, {os.cpu_count()} CPUs, {torch.get_num_threads()} PyTorch threads; "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )
    with tempfile.TemporaryDirectory() as folder:
        for clip in clips:
            report(clip.name, [play(clip, session, folder) for _ in range(args.runs)])
    session.close()


if __name__ == "__main__":
    main()
