"""``ram-avatar live``: drive an avatar from a camera, or from a clip played as if it were one.

Only argparse at import time (``ram-avatar --help`` stays fast); torch, OpenCV and MediaPipe load
inside the command.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ram_avatar.mda import DEFAULT_STRENGTH


def _live(args: argparse.Namespace) -> int:
    from ram_avatar.pipelines.live import LiveLoop, LiveSession, open_source

    if args.out is not None and Path(args.out).suffix.lower() != ".mp4":
        raise ValueError(f"the recording is written as .mp4, got {Path(args.out).name}")
    if not 0.0 <= args.strength <= 1.0:
        raise ValueError(f"--strength must be within [0, 1] (0 = MDA off, 1 = full), got {args.strength}")
    with contextlib.ExitStack() as cleanup:
        source = open_source(args.source)  # before the avatar loads: a missing camera or bad file fails at once
        cleanup.callback(source.close)
        from ram_avatar.pipelines import RamAvatarPipeline

        pipe = RamAvatarPipeline.from_pretrained(args.avatar, device=args.device, body_model_path=args.body_model_path)
        session = LiveSession(pipe, mda_strength=args.strength)
        cleanup.callback(session.close)
        session.warm_up(source.size)
        view = _view(pipe.image_size, not args.no_window, args.out, source.fps)
        what = f"camera {args.source}" if args.source.isdigit() else Path(args.source).name
        stop = "Ctrl-C or q in the window" if view.window else "Ctrl-C"
        print(f"live: {what} ({source.fps:g} fps) -> {pipe.name}; stop with {stop}")
        try:
            stats = LiveLoop(source, session, view).run()
        except BaseException:
            view.abort()
            raise
        video = view.close()
    print(stats.summary())
    if video is not None:
        print(f"wrote {video} (camera | avatar)")
    return 0


def _view(avatar_size: tuple[int, int], window: bool, out: str | None, fps: float):
    """The sink: a window when asked for and one can be opened (else a note), plus the recording."""
    from ram_avatar.pipelines.live import LiveView, display_available

    if window and not display_available():
        print("no display (DISPLAY is not set): running without a window", file=sys.stderr)
        window = False
    if window:
        import cv2

        try:
            return LiveView(avatar_size, window=True, out=out, fps=fps)
        except cv2.error as error:
            print(f"cannot open a window ({error.err}): running without one", file=sys.stderr)
    return LiveView(avatar_size, out=out, fps=fps)


def add_commands(commands: argparse._SubParsersAction) -> None:
    live = commands.add_parser(
        "live",
        help="drive an avatar live from a camera or a clip played as one (camera | avatar in a window)",
        description="Drive an avatar live: each camera frame's person is detected and their pose solved on one "
        "thread while the newest pose is aligned (MDA) and rendered on another (frames the renderer has no time for "
        "are dropped, so the avatar lags the camera by about one frame's work). Prints the frame rate, latency and "
        "time per stage at the end.",
    )
    live.add_argument("avatar", help="avatar folder or Hub id")
    live.add_argument(
        "--source",
        default="0",
        help="a camera index (default 0: the first camera) or a video file, "
        "played at its own fps as if it were a camera",
    )
    live.add_argument("--out", default=None, help="record camera | avatar side by side to this .mp4 (in real time)")
    live.add_argument("--no-window", action="store_true", help="show no window (without a display, none is shown)")
    live.add_argument(
        "--strength",
        type=float,
        default=DEFAULT_STRENGTH,
        help="motion distribution align, 0 = off .. 1 = full, on poses far from the avatar's own (default %(default)g)",
    )
    live.add_argument("--body-model-path", default=None, help="smplx avatars: folder with SMPLX_NEUTRAL.npz")
    live.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if present)")
    live.set_defaults(run=_live)
