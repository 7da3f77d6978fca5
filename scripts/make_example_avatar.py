"""Build the bundled example avatar ``examples/avatars/dancer-rt256`` and the example motions.

    python scripts/make_example_avatar.py --minutes 30          # [--work outputs/example_work]
    python scripts/make_example_avatar.py --more-minutes 60     # train the same run longer, rebuild
    python scripts/make_example_avatar.py --set alpha=1         # a training setting other than the default

1. tracks ``../shared/data/video/tfjs_synthetic_dance_static_576.mp4`` (a *synthetic*, rendered
   dancer from the TensorFlow.js test data, Apache-2.0: not a real person, so the avatar may be
   redistributed) at 256^2;
2. trains an ``rt-256`` avatar on it for ``--minutes`` of wall time;
3. trains a small pose prior on the MIT-licensed AnimatedDrawings BVH motions in
   ``../shared/data/mocap`` (the CMU-derived clip is left out), then the dancer's MDA decoder
   against it;
4. writes the whole avatar folder (safetensors only) and copies two MIT BVH motions with their
   licence into ``examples/motions/``.

Every stage keeps its result in ``--work`` and is skipped when that result exists, so an
interrupted build continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CLIP = SHARED / "video" / "tfjs_synthetic_dance_static_576.mp4"
MOCAP = SHARED / "mocap"
PRIOR_MOTIONS = [
    "animateddrawings_fair1_dab.bvh",
    "animateddrawings_fair1_jumping.bvh",
    "animateddrawings_fair1_wave_hello.bvh",
    "animateddrawings_fair1_zombie.bvh",
    "animateddrawings_rokoko_jesse_dance.bvh",
]
EXAMPLE_MOTIONS = {
    "animateddrawings_fair1_wave_hello.bvh": "wave_hello.bvh",
    "animateddrawings_fair1_dab.bvh": "dab.bvh",
}
MOTION_LICENCE = """# Example motions

| file | motion | source |
|---|---|---|
| `wave_hello.bvh` | waving hello (27 joints, 120 fps) | `examples/bvh/fair1/wave_hello.bvh` of AnimatedDrawings |
| `dab.bvh` | dab gesture (27 joints, 30 fps) | `examples/bvh/fair1/dab.bvh` of AnimatedDrawings |

From [AnimatedDrawings](https://github.com/facebookresearch/AnimatedDrawings), released under
the MIT licence:

    MIT License

    Copyright (c) Meta Platforms, Inc. and affiliates.

    Permission is hereby granted, free of charge, to any person obtaining a copy
    of this software and associated documentation files (the "Software"), to deal
    in the Software without restriction, including without limitation the rights
    to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
    copies of the Software, and to permit persons to whom the Software is
    furnished to do so, subject to the following conditions:

    The above copyright notice and this permission notice shall be included in all
    copies or substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
    IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
    FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
    AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
    LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
    OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
    SOFTWARE.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="avatar training wall time (default 30)")
    parser.add_argument(
        "--steps", type=int, default=20_000, help="avatar training steps at most / LR schedule length (default 20000)"
    )
    parser.add_argument(
        "--more-minutes", type=float, default=None, help="train an existing run this much longer, then rebuild"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=JSON", help="a training setting (see TrainConfig)"
    )
    parser.add_argument("--prior-steps", type=int, default=3000)
    parser.add_argument("--decoder-steps", type=int, default=1500)
    parser.add_argument("--work", default=str(ROOT / "outputs" / "example_work"), help="intermediate results")
    parser.add_argument("--out", default=str(ROOT / "examples" / "avatars" / "dancer-rt256"))
    parser.add_argument("--motions", default=str(ROOT / "examples" / "motions"))
    args = parser.parse_args()
    if not CLIP.is_file():
        raise SystemExit(f"{CLIP} is missing: the example is built from the shared data beside the project")

    from ram_avatar.mda import train_prior, train_subject_decoder
    from ram_avatar.mda.load import load_decoder, load_prior
    from ram_avatar.pipelines import RamAvatarPipeline
    from ram_avatar.tracking.pipeline import track
    from ram_avatar.training import TrainConfig, train
    from ram_avatar.training.cli import parse_pairs

    work = Path(args.work)
    subject, run, prior_dir, decoder_dir = work / "subject", work / "train", work / "pose_prior", work / "pose_decoder"
    if not (subject / "meta.json").is_file():
        print(track(CLIP, subject, resolution=256, resume=True))
    config = TrainConfig.for_config("rt-256", **{"steps": args.steps, **parse_pairs(args.set, "--set")})
    if not (run / "avatar" / "config.json").is_file():
        train(subject, run, config, minutes=args.minutes, resume=(run / "checkpoints" / "last").is_dir())
    elif args.more_minutes:  # continue the finished run (same settings; --steps may grow)
        train(subject, run, config, minutes=args.more_minutes, resume=True)
    if (prior_dir / "model.safetensors").is_file():
        prior = load_prior(prior_dir)
    else:
        prior = train_prior(
            [MOCAP / name for name in PRIOR_MOTIONS], prior_dir, args.prior_steps, model_kwargs={"hidden_dim": 256}
        ).model
    if (decoder_dir / "model.safetensors").is_file():
        decoder = load_decoder(decoder_dir)
    else:
        decoder = train_subject_decoder(subject, prior, decoder_dir, args.decoder_steps).model
    pipe = RamAvatarPipeline.from_training(
        subject, run / "avatar", decoder=decoder, prior=prior, name="dancer-rt256", synthetic=True, device="cpu"
    )
    print(f"wrote {pipe.save_pretrained(os.path.relpath(args.out))}")  # relative: the cards' snippets name it so

    motions = Path(args.motions)
    motions.mkdir(parents=True, exist_ok=True)
    for source, name in EXAMPLE_MOTIONS.items():
        shutil.copyfile(MOCAP / source, motions / name)
    (motions / "README.md").write_text(MOTION_LICENCE, encoding="utf-8")
    print(f"wrote {', '.join(EXAMPLE_MOTIONS.values())} and their licence to {motions}")


if __name__ == "__main__":
    main()
