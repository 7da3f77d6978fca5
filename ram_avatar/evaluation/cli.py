"""``ram-avatar eval``: the command-line face of :mod:`ram_avatar.evaluation.evaluate`.

Only argparse at import time; torch loads inside the command.
"""

from __future__ import annotations

import argparse

EPILOG = """Ablations (the paper's Table 3): train with a part switched off, e.g.
  ram-avatar train SUBJ runs/no-spatial --model spatial_attention=false
(also temporal_attention=false, face_map=false, hand_map=false), then
  ram-avatar eval runs/no-spatial/avatar SUBJ evals/no-spatial
for each run; every evals/<run>/metrics.md is one row."""


def run_eval(args: argparse.Namespace) -> int:
    from ram_avatar.atomic import check_output
    from ram_avatar.evaluation.evaluate import evaluate_avatar

    check_output(args.out_dir, "folder")  # before the avatar loads and renders
    result = evaluate_avatar(
        args.avatar,
        args.subject_dir,
        args.out_dir,
        every_k=args.every_k,
        masked=args.masked,
        ood_motion=args.ood_motion,
        ood_frames=args.ood_frames,
        mda_strength=args.mda_strength,
        fid_min_frames=args.fid_min_frames,
        background=args.background,
        device=args.device,
        body_model_path=args.body_model_path,
    )

    def shown(values: dict) -> str:
        return ", ".join(f"{k} {v['value']:.4g}" for k, v in values.items() if v["value"] is not None)

    scope = "person only (masked)" if result.info["masked"] else "whole frame"
    print(f"{len(result.frames)} held-out frames (every {result.info['every_k']}th)")
    print(f"  {scope}: {shown(result.metrics)}")
    print(f"  person only (masked): {shown(result.info['person_metrics'])}")
    if result.ood:
        print("OOD motion: " + ", ".join(f"{k} {v:.4g}" for k, v in result.ood.items() if isinstance(v, float)))
    print(f"wrote {result.out_dir}/metrics.md, metrics.json, per_frame.png, comparisons/, comparison.mp4")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="evaluate a trained avatar on its subject's held-out frames (metrics, pictures, video)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("avatar", help="ram-avatar train's OUT_DIR (or OUT_DIR/avatar), or a saved avatar folder")
    parser.add_argument("subject_dir", help="the subject dataset the avatar was trained on")
    parser.add_argument("out_dir", help="where metrics.md/json, per_frame.png, comparisons/ and comparison.mp4 go")
    parser.add_argument(
        "--every-k", type=int, default=None, help="hold out every k-th frame (default: as in training, else 10)"
    )
    parser.add_argument("--masked", action="store_true", help="metrics over the person mask instead of full frames")
    parser.add_argument(
        "--ood-motion", default=None, metavar="FILE", help="also drive with this motion (BVH, AMASS, SMPL-X, video...)"
    )
    parser.add_argument("--ood-frames", type=int, default=120, help="frames of --ood-motion to render (default 120)")
    parser.add_argument(
        "--mda-strength", type=float, default=1.0, help="MDA strength for --ood-motion (avatars with MDA)"
    )
    parser.add_argument("--fid-min-frames", type=int, default=50, help="report FID only with this many held-out frames")
    parser.add_argument(
        "--background", type=float, default=None, help="compositing grey level (default: the training's)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--body-model-path", default=None, help="smplx subjects: folder with SMPLX_NEUTRAL.npz")
    parser.set_defaults(run=run_eval)
