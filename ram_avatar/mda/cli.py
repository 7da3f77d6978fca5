"""``ram-avatar motion-prior ...`` and ``ram-avatar align ...``: Motion Distribution Align commands.

Only argparse is imported here (every ``ram-avatar`` call loads this module); torch and the
models load inside the commands. The training commands also run under ``accelerate launch``
through :mod:`ram_avatar.mda.train_prior` and :mod:`ram_avatar.mda.train_decoder`.
"""

from __future__ import annotations

import argparse

from ram_avatar.mda import DEFAULT_STRENGTH


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``motion-prior train``, ``align train`` and ``align apply``."""
    prior = subparsers.add_parser("motion-prior", help="the body pose prior (VAE) of Motion Distribution Align")
    prior_actions = prior.add_subparsers(dest="action", required=True)
    add_prior_train_args(
        prior_actions.add_parser(
            "train",
            help="train the pose prior on motion files (BVH, AMASS / SMPL-X .npz)",
            description="Train the pose prior. Multi-GPU: accelerate launch -m ram_avatar.mda.train_prior ...",
        )
    )

    align = subparsers.add_parser("align", help="align driving motion to a subject's own pose distribution")
    align_actions = align.add_subparsers(dest="action", required=True)
    add_decoder_train_args(
        align_actions.add_parser(
            "train",
            help="train a subject's conditional pose decoder against a pose prior",
            description="Train the subject decoder. Multi-GPU: accelerate launch -m ram_avatar.mda.train_decoder ...",
        )
    )
    apply = align_actions.add_parser("apply", help="align a motion file; writes OUT.npz, OUT.png (OOD plot), OUT.csv")
    apply.add_argument("motion", help="driving motion file (BVH, AMASS / SMPL-X .npz / .json)")
    apply.add_argument("out", help="aligned motion, .npz (what `ram-avatar motion convert` writes)")
    apply.add_argument(
        "--decoder", required=True, help="subject decoder folder or Hub id (from `ram-avatar align train`)"
    )
    apply.add_argument("--prior", required=True, help="the pose prior the decoder was trained against")
    apply.add_argument(
        "--strength",
        type=float,
        default=DEFAULT_STRENGTH,
        help="0 = off .. 1 = full alignment, on the frames far from the subject's poses (default %(default)g)",
    )
    apply.add_argument(
        "--former",
        choices=("aligned", "driving"),
        default="aligned",
        help="condition each frame on the previously aligned pose (default) or the previous driving pose",
    )
    apply.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if present)")
    apply.set_defaults(run=run_align_apply)


def _training_args(parser: argparse.ArgumentParser, steps: int) -> None:
    parser.add_argument("--steps", type=int, default=steps, help=f"total training steps (default {steps})")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden-dim", type=int, default=None, help="MLP width (default: the model's)")
    parser.add_argument(
        "--position-weight",
        type=float,
        default=1.0,
        help="weight of the joint-position loss on the body template's skeleton (0 = off)",
    )
    parser.add_argument("--body-template", choices=("anny", "smplx"), default="anny", help="skeleton for that loss")
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)


def add_prior_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="MOTION", help="motion files or folders of them")
    parser.add_argument("out", metavar="OUT", help="output folder (config.json, model.safetensors, metrics.json)")
    parser.add_argument(
        "--holdout",
        action="append",
        default=[],
        metavar="NAME",
        help="hold this motion (file name or stem) out whole for the error report; repeatable",
    )
    parser.add_argument("--val-fraction", type=float, default=0.1, help="also hold out this tail of every other motion")
    parser.add_argument("--fps", type=float, default=30.0, help="resample motions to this rate (default 30)")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--no-mirror", action="store_true", help="do not add left/right mirrored poses")
    _training_args(parser, steps=20_000)
    parser.set_defaults(run=run_prior_train)


def add_decoder_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "subject", metavar="SUBJECT", help="subject dataset folder (tracked), or a motion file of the subject's poses"
    )
    parser.add_argument("out", metavar="OUT", help="output folder for the decoder")
    parser.add_argument("--prior", required=True, help="pose prior folder or Hub id")
    parser.add_argument("--fps", type=float, default=None, help="motion-file subjects: resample to this rate")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="hold out this tail of the subject's frames")
    _training_args(parser, steps=4000)
    parser.set_defaults(run=run_decoder_train)


def _common(args: argparse.Namespace) -> dict:
    return {
        "batch_size": args.batch_size,
        "lr": args.lr,
        "position_weight": args.position_weight,
        "body_template": args.body_template,
        "checkpoint_every": args.checkpoint_every,
        "resume": args.resume,
        "seed": args.seed,
        "val_fraction": args.val_fraction,
    }


def run_prior_train(args: argparse.Namespace) -> int:
    from ram_avatar.atomic import check_output
    from ram_avatar.mda.train import train_prior

    check_output(args.out, "folder")
    model_kwargs = {"latent_dim": args.latent_dim} | ({"hidden_dim": args.hidden_dim} if args.hidden_dim else {})
    result = train_prior(
        args.inputs,
        args.out,
        args.steps,
        holdout=args.holdout,
        fps=args.fps,
        mirror=not args.no_mirror,
        model_kwargs=model_kwargs,
        **_common(args),
    )
    m = result.metrics
    print(
        f"pose prior written to {result.out_dir}: mean per-joint error {m['train_deg']:.1f} deg on "
        f"{m['train_frames']} training frames"
        + (
            f", {m['heldout_deg']:.1f} deg on {m['heldout_frames']} held-out frames"
            if m["heldout_deg"] is not None
            else ""
        )
    )
    return 0


def run_decoder_train(args: argparse.Namespace) -> int:
    from ram_avatar.atomic import check_output
    from ram_avatar.mda.train import train_subject_decoder

    check_output(args.out, "folder")
    model_kwargs = {"hidden_dim": args.hidden_dim} if args.hidden_dim else None
    result = train_subject_decoder(
        args.subject, args.prior, args.out, args.steps, fps=args.fps, model_kwargs=model_kwargs, **_common(args)
    )
    m = result.metrics
    print(f"subject decoder written to {result.out_dir} ({m['train_frames']} frames at {m['fps']:g} fps)")
    if "heldout_change_deg" in m:
        print(
            f"held-out subject frames: {m['heldout_change_deg']:.1f} deg mean per-joint change when fully aligned, "
            f"OOD score {m['heldout_ood_before']:.2f} -> {m['heldout_ood_after']:.2f}"
        )
    return 0


def run_align_apply(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ram_avatar.atomic import check_output
    from ram_avatar.device import default_device
    from ram_avatar.mda.align import align
    from ram_avatar.mda.load import load_decoder, load_prior
    from ram_avatar.mda.report import plot_ood, write_ood_csv
    from ram_avatar.motion import Motion, load_motion, save_motion

    out = Path(args.out)
    if out.suffix.lower() != ".npz":
        raise ValueError(f"the aligned motion is written as .npz; got {out}")
    for path in (out, out.with_suffix(".png"), out.with_suffix(".csv")):  # before the models load
        check_output(path)
    device = args.device or default_device()
    prior, decoder = load_prior(args.prior).to(device), load_decoder(args.decoder).to(device)
    motion = load_motion(args.motion, fps=decoder.fps)  # the decoder's "former pose" is 1/fps back
    result = align(motion.pose, prior, decoder, strength=args.strength, former=args.former)
    save_motion(
        Motion(result.pose.to("cpu"), motion.fps, f"{motion.name} aligned", motion.source, motion.joint_map), out
    )
    plot_ood(result, motion.fps, out.with_suffix(".png"), title=f"{motion.name}, strength {args.strength:g}")
    write_ood_csv(result, motion.fps, out.with_suffix(".csv"))
    before, after = result.ood_before.median().item(), result.ood_after.median().item()
    print(
        f"wrote {out} ({motion.num_frames} frames at {motion.fps:g} fps), {out.with_suffix('.png')} and "
        f"{out.with_suffix('.csv')}: median OOD score {before:.2f} -> {after:.2f}, mean change "
        f"{result.change_deg.mean().item():.1f} deg per joint"
    )
    return 0
