"""How clean an avatar's outline stays on a motion it never saw (no ground truth needed).

Held-out frames of the training clip are poses close to trained ones; a driving motion is not.
Issue #17 found avatars whose held-out metrics kept improving with training while their outline
on the README's wave broke into dark specks. This measures that: each avatar renders the motion
on white and on black, alpha = 1 - (white - black), and per frame:

* ragged pixels: pixels of the alpha > 0.5 silhouette that a 5x5 majority vote flips (specks
  off the body, holes and notches in it, a frayed edge); a clean outline has few;
* fringe: pixels with 0.05 < alpha < 0.95 (a soft edge or semi-transparent strands).

    python benchmarks/novel_outline.py AVATAR... [--motion examples/motions/wave_hello.bvh] [--out P.png]

``AVATAR``: an avatar folder (``ram-avatar create`` / the example), or a ``ram-avatar train``
OUT_DIR together with ``--subject`` (its network, assembled with the subject's body). ``--out``
writes frame ``--frame`` of each avatar side by side on white, 3x.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def ragged_pixels(alpha: torch.Tensor) -> torch.Tensor:
    """(T,) pixels per frame of the alpha > 0.5 silhouette that a 5x5 majority vote flips: (T, H, W)."""
    body = (alpha > 0.5).float()[:, None]
    share = F.avg_pool2d(body, 5, stride=1, padding=2, count_include_pad=False)  # (T, 1, H, W)
    flipped = (body > 0.5) != (share > 0.5)
    return flipped.flatten(1).sum(1)


def render_alpha(pipe, motion: str, strength: float, frames: int) -> tuple[torch.Tensor, np.ndarray]:  # noqa: ANN001
    """(alpha (T, H, W) in [0, 1], frames on white (T, H, W, 3) uint8) of ``motion``."""
    white = pipe(motion, strength, background=(1.0, 1.0, 1.0), max_frames=frames, progress=False).frames
    black = pipe(motion, strength, background=(0.0, 0.0, 0.0), max_frames=frames, progress=False).frames
    alpha = 1 - (white.astype(np.float32) - black.astype(np.float32)).mean(-1) / 255
    return torch.from_numpy(alpha).clamp(0, 1), white


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("avatars", nargs="+")
    parser.add_argument("--subject", help="the subject folder of ram-avatar train OUT_DIRs")
    parser.add_argument("--motion", default=str(ROOT / "examples" / "motions" / "wave_hello.bvh"))
    parser.add_argument("--mda-strength", type=float, default=0.0)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--frame", type=int, default=30, help="the frame --out shows")
    parser.add_argument("--out", help="a PNG: that frame of each avatar, on white, 3x")
    args = parser.parse_args()

    from ram_avatar.pipelines import RamAvatarPipeline

    tiles = []
    print(f"{Path(args.motion).name}, {args.frames} frames, MDA {args.mda_strength:g}")
    print("| avatar | ragged px / frame (median) | fringe px / frame (median) |\n|---|---|---|")
    for path in args.avatars:
        folder = Path(path)
        if (folder / "model_index.json").is_file():
            pipe = RamAvatarPipeline.from_pretrained(folder)
        elif args.subject:
            pipe = RamAvatarPipeline.from_training(args.subject, folder / "avatar")
        else:
            parser.error(f"{path} is not an avatar folder; pass --subject for a training run")
        alpha, white = render_alpha(pipe, args.motion, args.mda_strength, args.frames)
        ragged = statistics.median(ragged_pixels(alpha).tolist())
        fringe = statistics.median(((alpha > 0.05) & (alpha < 0.95)).flatten(1).sum(1).tolist())
        print(f"| {path} | {ragged:.0f} | {fringe:.0f} |", flush=True)
        tiles.append(white[min(args.frame, len(white) - 1)])
    if args.out:
        import imageio.v3 as iio

        image = np.concatenate(tiles, 1).repeat(3, 0).repeat(3, 1)
        iio.imwrite(args.out, image)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
