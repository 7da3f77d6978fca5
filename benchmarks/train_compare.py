"""RamAvatar against the plain U-Net baseline: same subject, same losses, same wall-time budget.

    python benchmarks/train_compare.py SUBJECT_DIR OUT_ROOT [--config rt-256] [--minutes 20]
                                       [--parallel] [--threads 1] [-- extra train options]

Trains ``OUT_ROOT/avatar`` (RamAvatar) and ``OUT_ROOT/baseline`` (BaselineUNet with the same
texture and face / hand encoders) with ``python -m ram_avatar.training.train_avatar``, each for
``--minutes`` of wall time (``--parallel``: both at once, so that a busy shared machine slows
both alike), then prints a table of held-out PSNR / SSIM / LPIPS / masked PSNR from each run's
metrics.json, the steps each reached, and the median forward time of each trained model on the
held-out frames (batch 1; the maps are precomputed, as when driving from cached inputs).
Options after ``--`` go to both training runs (e.g. ``-- --batch-size 1 --perceptual-size 128``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file


def forward_ms(run: Path, subject_dir: Path, repeats: int = 20) -> float:
    """Median ms of the trained model's forward on held-out frames (batch 1, no autograd)."""
    from ram_avatar.data import load_subject
    from ram_avatar.models import BaselineUNet, RamAvatar
    from ram_avatar.training import TripletDataset

    metrics = json.loads((run / "metrics.json").read_text())
    cls = {"RamAvatar": RamAvatar, "BaselineUNet": BaselineUNet}[metrics["model"]]
    model = cls.from_pretrained(run / "avatar").eval()
    cache = next((run / "cache").glob("maps-*"))
    dataset = TripletDataset(load_subject(subject_dir), cache, metrics["held_out_frames"], None)
    items = [torch.utils.data.default_collate([dataset[i]])["maps"] for i in range(len(dataset))]
    times = []
    with torch.no_grad():
        for k in range(repeats + 3):
            start = time.perf_counter()
            model(items[k % len(items)])
            if k >= 3:
                times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("subject_dir", type=Path)
    parser.add_argument("out_root", type=Path)
    parser.add_argument("--config", default="rt-256")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--parallel", action="store_true", help="train both at once")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (OMP_NUM_THREADS)")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    runs = {"avatar": [], "baseline": ["--baseline"]}
    processes = []
    args.out_root.mkdir(parents=True, exist_ok=True)
    for name, flags in runs.items():
        command = [
            sys.executable,
            "-m",
            "ram_avatar.training.train_avatar",
            str(args.subject_dir),
            str(args.out_root / name),
            "--config",
            args.config,
            "--minutes",
            str(args.minutes),
            *flags,
            *extra,
        ]
        log = open(args.out_root / f"{name}.log", "w")  # noqa: SIM115 (open while the run lasts)
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        processes.append((name, process))
        if not args.parallel:
            process.wait()
    failed = [name for name, process in processes if process.wait() != 0]
    if failed:
        sys.exit(f"training failed for {failed}: see {args.out_root}/<name>.log")

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"\n{args.config}, {args.minutes:g} min each{' in parallel' if args.parallel else ''}, subject "
        f"{args.subject_dir}"
    )
    print(f"{'model':<14}{'steps':>7}{'PSNR':>8}{'SSIM':>8}{'LPIPS':>8}{'PSNR-m':>8}{'params':>10}{'fwd ms':>8}")
    for name in runs:
        run = args.out_root / name
        metrics = json.loads((run / "metrics.json").read_text())
        held = metrics["held_out"]
        params = sum(t.numel() for t in load_file(run / "avatar" / "model.safetensors").values())
        lpips = "n/a" if held["lpips_alex"] is None else f"{held['lpips_alex']:.4f}"
        print(
            f"{metrics['model']:<14}{metrics['steps']:>7}{held['psnr']:>8.2f}{held['ssim']:>8.4f}{lpips:>8}"
            f"{held['psnr_masked']:>8.2f}{params:>10,}{forward_ms(run, args.subject_dir):>8.1f}"
        )


if __name__ == "__main__":
    main()
