"""How much of an avatar's error is its outline: the diagnosis behind issue #17's edge spread.

    python benchmarks/outline.py SUBJECT_DIR AVATAR [--every-k 10]

``AVATAR`` is ``ram-avatar train``'s ``OUT_DIR/avatar`` (a network folder) trained on
``SUBJECT_DIR``. On the held-out frames it prints:

* the outline: median IoU of the posed template's silhouette with the person mask, of the
  avatar's alpha (> 0.5) with the template's silhouette and with the mask, and the avatar's mean
  alpha on the person's pixels outside the template (0 when the renderer cannot move the edge);
* person-only and whole-frame PSNR / SSIM on black and on white, with the avatar's colours
  composited through its own alpha, through the ground-truth mask (what a perfect outline would
  give) and through the template's silhouette.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("subject")
    parser.add_argument("avatar")
    parser.add_argument("--every-k", type=int, default=10)
    args = parser.parse_args()

    from ram_avatar import metrics
    from ram_avatar.body import load_template
    from ram_avatar.data import load_subject
    from ram_avatar.pipelines.format import load_network
    from ram_avatar.training.data import TripletDataset
    from ram_avatar.training.held_out import model_map_cache
    from ram_avatar.training.objectives import composite

    subject = load_subject(args.subject)
    model = load_network(args.avatar)[0].eval()
    template = load_template(subject.template.name)
    frames = [i for i in range(subject.num_frames) if i % args.every_k == args.every_k - 1]
    with tempfile.TemporaryDirectory() as cache_root:
        cache = model_map_cache(model, subject, template, cache_root, progress=False)
        dataset = TripletDataset(subject, cache, frames, None)
        batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        out = model(batch["maps"])
    mask = batch["mask"]  # (N, 1, H, W) soft person mask
    body = batch["maps"]["mask"].float().reshape(mask.shape)  # the template's silhouette
    person, inside, alpha = mask > 0.5, body > 0.5, out["alpha"]

    def iou(a: torch.Tensor, b: torch.Tensor) -> float:
        per_frame = (a & b).flatten(1).sum(1) / (a | b).flatten(1).sum(1).clamp_min(1)
        return float(per_frame.median())

    print(f"{len(frames)} held-out frames of {args.subject}")
    print(f"template vs mask IoU        {iou(inside, person):.3f}")
    print(f"avatar alpha vs template    {iou(alpha > 0.5, inside):.4f}")
    print(f"avatar alpha vs mask        {iou(alpha > 0.5, person):.3f}")
    band = person & ~inside
    print(f"alpha on the person outside the template: {float(alpha[band].mean()):.3f} ({int(band.sum())} pixels)")
    print("\n| background | alpha | person PSNR | person SSIM | whole PSNR | whole SSIM |\n|---|---|---|---|---|---|")
    for background in (0.0, 1.0):
        truth = composite(batch["image"], mask, background)
        for name, a in (("avatar's", alpha), ("ground-truth mask", mask), ("template", body)):
            pred = composite(out["rgb"], a, background).clamp(0, 1)
            masked = metrics.evaluate(pred, truth, mask, metrics=("psnr", "ssim"))
            whole = metrics.evaluate(pred, truth, metrics=("psnr", "ssim"))
            row = [masked["psnr"].value, masked["ssim"].value, whole["psnr"].value, whole["ssim"].value]
            print(f"| {background:g} | {name} | " + " | ".join(f"{v:.3f}" for v in np.asarray(row)) + " |")


if __name__ == "__main__":
    main()
