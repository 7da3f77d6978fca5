"""Motion Distribution Align on real mocap: does it leave the subject's poses alone and pull
foreign motion in, keeping its rhythm?

Until the tracker produces real subjects, the "subject" is one mocap clip (default: wave_hello,
someone standing and waving) held out of the prior entirely. The prior is trained on the other
five BVHs in ../shared/data/mocap (with mirroring and noise); the subject decoder on the subject
clip minus every fifth block of 6 frames (0.2 s), which are the subject's held-out frames: 20 %
of the clip spread over all of it, as held-out frames of a long capture would be. Jumping jacks
are the out-of-distribution motion. Prints one table:

- prior held-out error: mean per-joint angle error (deg) reconstructing the held-out clip
- change: mean per-joint angle change (deg) after align (small = passed through)
- OOD score before / after, median over frames (1 ~ a typical pose of the subject's)
- rhythm kept: Pearson correlation of the summed joint angular-speed curves before / after
for both ways of conditioning on the former pose (``align(..., former=...)``) and two strengths.

    python benchmarks/mda_eval.py            # ~2-3 min on 2 CPU cores
    python benchmarks/mda_eval.py --prior-steps 20000 --decoder-steps 8000   # better numbers
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ram_avatar.mda.align import align
from ram_avatar.mda.train import (
    TrainResult,
    load_prior,
    train_prior,
    train_subject_decoder,
)
from ram_avatar.motion import find_motion_files, load_motion
from ram_avatar.rotations import angle_between_aa

MOCAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mocap"


def joint_speed(body_pose: torch.Tensor) -> torch.Tensor:
    """Summed angular speed of the 21 body joints, degrees per frame: (T, 21, 3) -> (T - 1,)."""
    return angle_between_aa(body_pose[1:], body_pose[:-1]).sum(-1)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mocap", type=Path, default=MOCAP)
    parser.add_argument(
        "--subject", default="animateddrawings_fair1_wave_hello", help="clip (stem) used as the subject"
    )
    parser.add_argument(
        "--ood", default="animateddrawings_cmu1_jumping_jacks", help="clip (stem) used as foreign motion"
    )
    parser.add_argument("--prior-steps", type=int, default=2000)
    parser.add_argument("--decoder-steps", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=256, help="hidden width of both networks")
    parser.add_argument(
        "--position-weight", type=float, default=1.0, help="joint-position loss (loads the Anny skeleton)"
    )
    parser.add_argument("--prior", type=Path, default=None, help="reuse a prior trained by an earlier run (OUT/prior)")
    parser.add_argument("--out", type=Path, default=None, help="keep the trained models here (default: a temp folder)")
    args = parser.parse_args()
    if not args.mocap.is_dir():
        raise SystemExit(f"{args.mocap} not found: this benchmark needs ../shared/data/mocap")

    files = {f.stem: f for f in find_motion_files(args.mocap)}
    for name in (args.subject, args.ood):
        if name not in files:
            raise SystemExit(f"{name} not in {args.mocap}; have {sorted(files)}")
    out = Path(args.out or tempfile.mkdtemp(prefix="mda_eval_"))
    start = time.perf_counter()
    if args.prior:
        metrics = json.loads((args.prior / "metrics.json").read_text())
        prior = TrainResult(load_prior(args.prior), metrics, args.prior)
        args.prior_steps = metrics["steps"]
    else:
        prior = train_prior(
            list(files.values()),
            out / "prior",
            args.prior_steps,
            holdout=[args.subject],
            val_fraction=0.0,
            position_weight=args.position_weight,
            model_kwargs={"hidden_dim": args.hidden},
            progress=False,
        )
    prior_seconds = time.perf_counter() - start

    subject = load_motion(files[args.subject], fps=30.0).pose
    frames = len(subject.body_pose)
    held = [i for i in range(frames) if (i // 6) % 5 == 2]
    kept = [i for i in range(frames) if (i // 6) % 5 != 2]  # a 0.2 s jump at each gap: a few "former" pairs span it
    start = time.perf_counter()
    decoder = train_subject_decoder(
        subject[kept],
        prior.model,
        out / "decoder",
        args.decoder_steps,
        fps=30.0,
        val_fraction=0.0,
        position_weight=args.position_weight,
        model_kwargs={"hidden_dim": args.hidden},
        progress=False,
    )
    decoder_seconds = time.perf_counter() - start

    # The whole subject clip is aligned in order (so each frame's former pose is its real one);
    # only the held-out frames, and the frame-to-frame steps within held-out blocks, are scored.
    ood = load_motion(files[args.ood], fps=30.0).pose
    clips = {
        "subject held-out (in-dist.)": (subject, held),
        "jumping jacks (OOD)": (ood, list(range(len(ood.body_pose)))),
    }
    rows = []
    for label, (clip, scored) in clips.items():
        steps = [i for i in scored[:-1] if i + 1 in set(scored)]
        for former, strength in (("aligned", 1.0), ("driving", 1.0), ("aligned", 0.5), ("driving", 0.5)):
            result = align(clip, prior.model, decoder.model, strength=strength, former=former)
            rhythm = correlation(joint_speed(clip.body_pose)[steps], joint_speed(result.pose.body_pose)[steps])
            rows.append(
                (
                    label,
                    former,
                    strength,
                    len(scored),
                    float(result.change_deg[scored].mean()),
                    float(result.ood_before[scored].median()),
                    float(result.ood_after[scored].median()),
                    rhythm,
                )
            )

    print(
        f"\nprior: {prior.metrics['train_frames']} training frames (+ mirrored), {args.prior_steps} steps, "
        f"{prior_seconds:.0f} s"
    )
    print(f"  mean per-joint angle error, training frames: {prior.metrics['train_deg']:.1f} deg")
    print(f"  mean per-joint angle error, held-out clip {args.subject}: {prior.metrics['heldout_deg']:.1f} deg")
    print(
        f"subject decoder: {len(kept)} frames of {args.subject}, {args.decoder_steps} steps, {decoder_seconds:.0f} s\n"
    )
    print("| clip | former | strength | frames | change (deg/joint) | OOD before | OOD after | rhythm corr. |")
    print("|---|---|---|---|---|---|---|---|")
    for label, former, strength, count, change, before, after, rhythm in rows:
        print(
            f"| {label} | {former} | {strength:.1f} | {count} | {change:.1f} | {before:.2f} | {after:.2f} | "
            f"{rhythm:.2f} |"
        )
    print(f"\nmodels in {out}")


if __name__ == "__main__":
    main()
