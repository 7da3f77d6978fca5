"""``ram-avatar create | animate | push | info``: the product commands.

Only argparse at import time (``ram-avatar --help`` stays fast); torch and the models load inside
the commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ram_avatar.mda import DEFAULT_STRENGTH


def create_avatar(
    clip: str,
    out: str,
    *,
    work: str | None = None,
    resolution: int = 256,
    config: str = "rt-256",
    minutes: float = 30.0,
    steps: int = 20_000,
    prior: str | None = None,
    mda: bool = True,
    decoder_steps: int = 2000,
    max_frames: int | None = None,
    name: str | None = None,
    synthetic: bool = False,
    device: str | None = None,
    progress: bool = True,
    trainer_hook=None,
) -> Path:
    """Clip -> whole avatar folder: track, train the network, train the MDA decoder (against
    ``prior``, default: the one shipped with the package, see :func:`default_prior`; ``mda=False``
    skips it; with no prior found it says so in one line and builds no MDA), assemble.
    Intermediate results go to ``work`` (default ``OUT.work``) and are reused by a rerun
    (tracking and training resume; finished stages are kept). ``synthetic``: the clip shows a
    rendered, synthetic person (the model cards say so; see ``from_training``). Both folders
    are checked to be writable before any work; a failed run leaves no folder it made empty."""
    from ram_avatar.atomic import check_output, removed_if_new
    from ram_avatar.pipelines import RamAvatarPipeline
    from ram_avatar.tracking.pipeline import track
    from ram_avatar.training.train_avatar import TrainConfig, Trainer

    out_path = Path(out)
    work_dir = Path(work) if work else out_path.with_name(out_path.name + ".work")
    check_output(out_path, "folder")
    check_output(work_dir, "folder")
    subject, run = work_dir / "subject", work_dir / "train"
    with removed_if_new(work_dir):
        if not (subject / "meta.json").is_file():
            track(
                clip,
                subject,
                resolution=resolution,
                max_frames=max_frames,
                resume=True,
                device=device,
                progress=progress,
            )
        if not (run / "avatar" / "config.json").is_file():
            trainer = Trainer(
                subject,
                run,
                TrainConfig.for_config(config, steps=steps),
                minutes=minutes,
                resume=(run / "checkpoints" / "last").is_dir(),
                cpu=device == "cpu",
                progress=progress,
            )
            if trainer_hook is not None:
                trainer_hook(trainer)
            trainer.run()
        decoder = None
        prior = (prior or default_prior()) if mda else None
        if mda and prior is None:
            print(
                "no pose prior found (this install lacks ram_avatar/mda/pose_prior): the avatar gets no MDA; "
                "pass --prior FOLDER_OR_HUB_ID to add it",
                file=sys.stderr,
            )
        if prior is not None:
            from ram_avatar.mda import train_subject_decoder

            decoder_dir = work_dir / "pose_decoder"
            if (decoder_dir / "model.safetensors").is_file():
                from ram_avatar.mda.load import load_decoder

                decoder = load_decoder(decoder_dir)
            else:
                decoder = train_subject_decoder(subject, prior, decoder_dir, decoder_steps, progress=progress).model
        pipe = RamAvatarPipeline.from_training(
            subject,
            run / "avatar",
            decoder=decoder,
            prior=prior if decoder is not None else None,
            name=name or out_path.name,
            synthetic=synthetic,
            device=device,
        )
        return pipe.save_pretrained(out_path)


def default_prior() -> str | None:
    """The folder of the pose prior that ships inside the package (package data
    ``ram_avatar/mda/pose_prior``, the bundled example avatar's prior), in any install; None only
    where the install lacks it."""
    from importlib.resources import files

    folder = files("ram_avatar.mda") / "pose_prior"
    return str(folder) if (folder / "config.json").is_file() else None


def _create(args: argparse.Namespace) -> int:
    folder = create_avatar(
        args.clip,
        args.out,
        work=args.work,
        resolution=args.resolution,
        config=args.config,
        minutes=args.minutes,
        steps=args.steps,
        prior=args.prior,
        mda=not args.no_mda,
        decoder_steps=args.decoder_steps,
        max_frames=args.max_frames,
        synthetic=args.synthetic,
        device=args.device,
    )
    print(f"wrote the avatar {folder}; try: ram-avatar animate {folder} MOTION out.mp4")
    return 0


def _animate(args: argparse.Namespace) -> int:
    from ram_avatar.atomic import check_output
    from ram_avatar.pipelines import RamAvatarPipeline

    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"the output is written as .mp4, got {out}")
    overlay = out.with_name(out.stem + "_template.mp4") if args.overlay else None
    plot = out.with_name(out.stem + "_ood.png")
    check_output(out)  # before the avatar loads and any frame renders
    if overlay is not None:
        check_output(overlay)
    pipe = RamAvatarPipeline.from_pretrained(args.avatar, device=args.device, body_model_path=args.body_model_path)
    if pipe.has_mda:
        check_output(plot)
    pipe.fast = not args.eager
    result = pipe(
        args.motion,
        mda_strength=args.mda_strength,
        out=out,
        overlay=args.overlay,
        overlay_out=overlay,
        fps=args.fps,
        max_frames=args.max_frames,
        audio=not args.no_audio,
    )
    extra = [str(overlay)] if overlay else []
    if result.ood_before is not None:
        result.plot_ood(plot, title=f"{result.extras['motion']}, MDA strength {args.mda_strength:g}")
        extra.append(str(plot))
        print(
            f"MDA: median OOD score {float(_median(result.ood_before)):.2f} -> {float(_median(result.ood_after)):.2f}"
        )
    print(
        f"wrote {result.video}{' and ' + ', '.join(extra) if extra else ''}: {result.num_frames} frames at "
        f"{result.fps:g} fps, rendered at {result.render_fps:.1f} frames/s ({result.seconds:.1f} s in all)"
    )
    return 0


def _median(values) -> float:
    import numpy as np

    return float(np.median(values))


def _push(args: argparse.Namespace) -> int:
    from ram_avatar.pipelines import RamAvatarPipeline

    pipe = RamAvatarPipeline.from_pretrained(args.avatar, device="cpu")
    commit = pipe.push_to_hub(args.repo_id, token=args.token, private=args.private or None)
    print(f"pushed {args.avatar} to {commit.commit_url}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ram_avatar.pipelines.folder import describe_avatar

    info = describe_avatar(args.avatar)  # from the folder's files: no body template, no network loaded
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    size = "x".join(str(s) for s in reversed(info["image_size"]))
    print(
        f"{info['name']}: {info['network']} ({info['parameters'] / 1e6:.2f} M parameters), {size} px at "
        f"{info['fps']:g} fps"
    )
    print(f"  body template {info['template']['name']}, shape {[round(v, 3) for v in info['template']['shape']]}")
    print(
        f"  motion align (MDA): {'yes' if info['mda'] else 'no'}; face rig: {'yes' if info['face_rig'] else 'no'}; "
        f"surface offsets: {'yes' if info.get('surface_offsets') else 'no'}"
    )
    if info["source"]:
        print(f"  trained from {info['source'].get('video')} ({info['source'].get('frames')} frames)")
    if info["training"]:
        held = {k: v for k, v in (info["training"].get("held_out") or {}).items() if isinstance(v, (int, float))}
        whole = ", ".join(f"{k} {v:.3g}" for k, v in held.items() if not k.endswith("_masked"))
        person = ", ".join(f"{k.removesuffix('_masked')} {v:.3g}" for k, v in held.items() if k.endswith("_masked"))
        print(
            f"  training: {info['training'].get('config')}, {info['training'].get('steps')} steps; held-out frames: "
            f"{whole or 'n/a'} (whole frame){f'; {person} (person only)' if person else ''}"
        )
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    create = commands.add_parser(
        "create", help="clip -> avatar folder: track, train (CPU defaults), MDA decoder, assemble"
    )
    create.add_argument("clip", help="a video of one person, 30 s to a few minutes, whole body in view")
    create.add_argument("out", help="the avatar folder to write")
    create.add_argument(
        "--work", default=None, help="folder for the subject dataset and training run (default OUT.work)"
    )
    create.add_argument("--resolution", type=int, default=256, help="crop / avatar size in pixels (default 256)")
    create.add_argument("--config", default="rt-256", help="avatar size: rt-256 (default), hq-512, paper-1024")
    create.add_argument("--minutes", type=float, default=30.0, help="training wall-time limit (default 30)")
    create.add_argument(
        "--steps",
        type=int,
        default=20_000,
        help="training steps at most, and the LR schedule's length (default 20000: on a CPU the minutes end first, "
        "and the schedule then decays over them)",
    )
    create.add_argument(
        "--prior", default=None, help="pose prior folder / Hub id for the MDA decoder (default: ram-avatar's own)"
    )
    create.add_argument("--no-mda", action="store_true", help="make no MDA decoder")
    create.add_argument("--decoder-steps", type=int, default=2000, help="MDA decoder training steps (default 2000)")
    create.add_argument("--max-frames", type=int, default=None, help="track at most this many frames")
    create.add_argument(
        "--synthetic",
        action="store_true",
        help="the clip shows a rendered, synthetic person, not a real one (the model card says so)",
    )
    create.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if present)")
    create.set_defaults(run=_create)

    animate = commands.add_parser(
        "animate", help="drive an avatar with a motion (BVH, AMASS / SMPL-X file, or a clip) into an mp4"
    )
    animate.add_argument("avatar", help="avatar folder or Hub id")
    animate.add_argument("motion", help="BVH, AMASS / SMPL-X .npz / .json, a video (tracked), or a subject folder")
    animate.add_argument("out", help="output .mp4 (gets the clip's sound when the motion is a video with sound)")
    animate.add_argument(
        "--mda-strength",
        type=float,
        default=DEFAULT_STRENGTH,
        help=(
            "motion distribution align, 0 = off .. 1 = full, on the frames far from the avatar's own poses "
            "(default %(default)g)"
        ),
    )
    animate.add_argument(
        "--overlay", action="store_true", help="also write OUT_template.mp4: the posed template over the avatar"
    )
    animate.add_argument("--fps", type=float, default=None, help="render at this frame rate (default: the avatar's)")
    animate.add_argument("--max-frames", type=int, default=None, help="render at most this many frames")
    animate.add_argument("--no-audio", action="store_true", help="do not copy a driving clip's sound")
    animate.add_argument("--body-model-path", default=None, help="smplx avatars: folder with SMPLX_NEUTRAL.npz")
    animate.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if present)")
    animate.add_argument(
        "--eager", action="store_true", help="render with the eager network, not the fast inference path (~2x slower)"
    )
    animate.set_defaults(run=_animate)

    push = commands.add_parser("push", help="upload an avatar folder to a Hugging Face Hub model repo")
    push.add_argument("avatar", help="avatar folder")
    push.add_argument("repo_id", help="owner/name of the Hub model repo (created if missing)")
    push.add_argument("--token", default=None, help="Hub token with write access (default: your login / $HF_TOKEN)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.set_defaults(run=_push)

    info = commands.add_parser("info", help="describe an avatar folder or Hub id")
    info.add_argument("avatar", help="avatar folder or Hub id")
    info.add_argument("--json", action="store_true", help="print everything as JSON")
    info.set_defaults(run=_info)
