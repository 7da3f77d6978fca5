"""``ram-avatar motion ...``: motion-file commands (argparse only at import time)."""

from __future__ import annotations

import argparse


def _convert(args: argparse.Namespace) -> int:
    from ram_avatar.atomic import check_output
    from ram_avatar.body.layout import JOINT_NAMES
    from ram_avatar.motion import load_motion, save_motion

    check_output(args.out)  # before a long file is read
    motion = load_motion(args.file, fps=args.fps, max_frames=args.max_frames, source_fps=args.source_fps)
    path = save_motion(motion, args.out)
    print(f"wrote {path}: {motion.num_frames} frames at {motion.fps:g} fps ({motion.duration:.2f} s)")
    if motion.joint_map:
        mapped = ", ".join(f"{smplx}<-{source}" for smplx, source in motion.joint_map.items())
        unmapped = [name for name in JOINT_NAMES if name not in motion.joint_map]
        print(f"mapped {len(motion.joint_map)} of {len(JOINT_NAMES)} SMPL-X joints: {mapped}")
        print(f"at rest (not in the file): {', '.join(unmapped) or 'none'}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``motion convert``."""
    motion = subparsers.add_parser("motion", help="import driving motion (BVH, AMASS, SMPL-X files)")
    commands = motion.add_subparsers(dest="motion_command", required=True)
    convert = commands.add_parser(
        "convert",
        help="convert a .bvh / AMASS .npz / SMPL-X .npz or .json file into a SMPL-X-layout .npz",
        description="Load a motion file (retargeting BVH skeletons onto SMPL-X joints), facing +Z "
        "and starting at the origin, and save it as ram-avatar's SMPL-X-layout .npz.",
    )
    convert.add_argument("file", help="input motion file")
    convert.add_argument("out", help="output .npz")
    convert.add_argument("--fps", type=float, default=None, help="resample to this frame rate")
    convert.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames")
    convert.add_argument(
        "--source-fps", type=float, default=None, help="the input's frame rate, for files that store none"
    )
    convert.set_defaults(run=_convert)
