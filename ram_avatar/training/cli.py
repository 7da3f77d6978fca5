"""``ram-avatar train``: the command-line face of :mod:`ram_avatar.training.train_avatar`.

Only argparse at import time (``ram-avatar --help`` stays fast); torch and Accelerate load inside
the command.
"""

from __future__ import annotations

import argparse
import json


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ram-avatar train`` (also ``python -m ram_avatar.training.train_avatar``)."""
    parser.add_argument("subject_dir", help="subject dataset folder (from `ram-avatar track`)")
    parser.add_argument("out_dir", help="training folder: checkpoints, logs, preview.png, avatar/, metrics.json")
    parser.add_argument("--config", default="rt-256", help="avatar size: rt-256 (default), hq-512, paper-1024")
    parser.add_argument(
        "--steps", type=int, default=None, help="total training steps, also the LR schedule's length (default 20000)"
    )
    parser.add_argument("--minutes", type=float, default=None, help="stop after this much wall time (this run)")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUT_DIR from its last checkpoint")
    parser.add_argument("--baseline", action="store_true", help="train the plain U-Net comparison instead")
    parser.add_argument("--batch-size", type=int, default=None, help="triplets per step and process (default 2)")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the config's recipe)")
    parser.add_argument(
        "--paper-losses",
        action="store_true",
        help="train with the paper's losses (+ VGG perceptual, hand perceptual, temporal GAN): the default of "
        "hq-512 and paper-1024; rt-256's CPU recipe is L1 + alpha (twice the steps, better at CPU budgets)",
    )
    parser.add_argument(
        "--perceptual-size",
        type=int,
        default=None,
        help="perceptual loss: VGG sees frames resized to this side (default 128; --set perceptual_size=null: full)",
    )
    parser.add_argument("--held-out-every", type=int, default=None, help="hold out every k-th frame (default 10)")
    parser.add_argument(
        "--eval-every", type=int, default=None, help="steps between held-out evaluations + checkpoints (default 500)"
    )
    parser.add_argument(
        "--preview-every", type=int, default=None, help="steps between preview.png updates (default 250)"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader worker processes (default 0)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="any other training setting, e.g. --set gan=0.05 (see TrainConfig)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override a model config value, e.g. --model texture_size=512",
    )
    parser.add_argument("--body-model-path", default=None, help="smplx subjects: folder with SMPLX_NEUTRAL.npz")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even where CUDA is present")
    parser.add_argument(
        "--push-to-hub", default=None, metavar="REPO_ID", help="upload the trained avatar to this Hub model repo"
    )
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")


def parse_pairs(items: list[str], flag: str) -> dict:
    """``["gan=0.05", "config=hq-512"]`` -> ``{"gan": 0.05, "config": "hq-512"}`` (values as JSON, else text)."""
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text  # a bare string, e.g. --set config=hq-512
    return values


def config_from_args(args: argparse.Namespace):  # noqa: ANN201
    """The ``TrainConfig`` the options describe (defaults where an option is not given)."""
    from ram_avatar.models import config_names
    from ram_avatar.training.train_avatar import PAPER_LOSSES, TrainConfig

    values = {
        "baseline": args.baseline,
        **(PAPER_LOSSES if args.paper_losses else {}),
        **parse_pairs(args.set, "--set"),
    }
    size = values.pop("config", args.config)
    if size not in config_names():
        raise ValueError(f"unknown --config {size!r}; choose one of {', '.join(config_names())}")
    for name in (
        "steps",
        "batch_size",
        "lr",
        "perceptual_size",
        "held_out_every",
        "seed",
        "num_workers",
        "preview_every",
    ):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.eval_every is not None:
        values["eval_every"] = values["checkpoint_every"] = args.eval_every
    if args.model:
        values["model_overrides"] = parse_pairs(args.model, "--model")
    return TrainConfig.for_config(size, **values)


def run_train(args: argparse.Namespace) -> int:
    from ram_avatar.atomic import check_output
    from ram_avatar.training.card import push_avatar
    from ram_avatar.training.train_avatar import train

    check_output(args.out_dir, "folder")  # before the subject and the models load
    metrics = train(
        args.subject_dir,
        args.out_dir,
        config_from_args(args),
        resume=args.resume,
        minutes=args.minutes,
        body_model_path=args.body_model_path,
        cpu=args.cpu,
        repo_id=args.push_to_hub,
    )
    if "model" not in metrics:  # a non-main process of a multi-process run
        return 0
    held_out = metrics["held_out"]
    shown = ", ".join(f"{k} {v:.4g}" for k, v in held_out.items() if v is not None)
    print(f"trained {metrics['model']} ({metrics['config']}) for {metrics['steps']} steps; held-out: {shown}")
    print(f"wrote {args.out_dir}/avatar (load with {metrics['model']}.from_pretrained) and {args.out_dir}/metrics.json")
    if args.push_to_hub:
        commit = push_avatar(f"{args.out_dir}/avatar", args.push_to_hub, private=args.private or None)
        print(f"pushed to {commit.commit_url}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="train an avatar on a subject dataset (CPU, CUDA or multi-GPU via accelerate)"
    )
    add_train_arguments(parser)
    parser.set_defaults(run=run_train)
