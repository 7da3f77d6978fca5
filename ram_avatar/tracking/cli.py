"""``ram-avatar track``: the command-line face of :func:`ram_avatar.tracking.pipeline.track`."""

from __future__ import annotations

import argparse


def _track(args: argparse.Namespace) -> int:
    from ram_avatar.tracking.pipeline import track

    summary = track(
        args.clip,
        args.out_dir,
        body_template=args.body_template,
        body_model_path=args.body_model_path,
        resolution=args.resolution,
        max_frames=args.max_frames,
        fps=args.fps,
        resume=args.resume,
        overwrite=args.overwrite,
        device=args.device,
        fit_iters=args.fit_iters,
    )
    print(
        f"wrote {summary.path} ({summary.num_frames} frames; faces in {summary.face_frames}); "
        f"median reprojection error: body {summary.body_error_px:.1f} px, hands "
        f"{summary.hand_error_px:.1f} px at {args.resolution} px; template/mask IoU {summary.mask_iou:.2f}. "
        f"Check {summary.path / 'preview.mp4'}"
    )
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    from ram_avatar.cli import add_template_args

    track = commands.add_parser(
        "track", help="track a clip into a subject dataset (frames, masks, body/hand/face parameters, camera)"
    )
    track.add_argument("clip", help="the video of one person (mp4, webm, mov ...)")
    track.add_argument("out_dir", help="folder for the subject dataset (+ preview.mp4, fit_errors.csv)")
    track.add_argument("--resolution", type=int, default=512, help="square crop size in pixels (default 512)")
    track.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames")
    track.add_argument("--fps", type=float, default=None, help="resample the clip to this frame rate")
    track.add_argument("--resume", action="store_true", help="skip the stages an interrupted run finished")
    track.add_argument("--overwrite", action="store_true", help="replace an existing dataset at OUT_DIR")
    track.add_argument("--fit-iters", type=int, default=None, help="cap each fitting stage's iterations (quick looks)")
    add_template_args(track)
    track.set_defaults(run=_track)
