"""Quality of ``ram-avatar create`` at CPU time budgets: the table of issue #17.

    python benchmarks/create_quality.py                          # both shared clips, 5 / 15 / 30 min
    python benchmarks/create_quality.py --minutes 5 --clips tfjs_synthetic_dance_static_576.mp4
    python benchmarks/create_quality.py --ram-avatar /old/checkout/.venv/bin/ram-avatar --label main-before

For each clip and budget it runs ``ram-avatar create CLIP OUT --minutes M --no-mda`` as a user
would (a separate process, PyTorch's default threads unless ``--threads``), reusing one tracked
subject per clip (tracking is not what is measured), then evaluates the avatar on the subject's
held-out frames with this checkout's evaluator (the same one for every version compared): whole
frames on black, and person only (over the ground-truth mask). It prints a Markdown table and
writes ``results.json``, ``<clip>-<minutes>min.png`` (held-out GT | avatar on white, then on black,
4 frames) under ``--out``. It takes the sum of the budgets (+ ~1 min each) per clip: run it on a
quiet machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "video"
CLIPS = ["pose2sim_single_cam01_static_1p67s.mp4", "tfjs_synthetic_dance_static_576.mp4"]
COLUMNS = [
    ("psnr", "whole"),
    ("ssim", "whole"),
    ("lpips_alex", "whole"),
    ("psnr", "person"),
    ("ssim", "person"),
    ("lpips_alex", "person"),
    ("psnr", "person_white"),
]


def run(command: list[str], log: Path, threads: int | None) -> float:
    """Run ``command``, its output into ``log``; returns the wall time in seconds."""
    if threads:
        command = [command[0], "--threads", str(threads), *command[1:]]
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed, see {log}")
    return time.perf_counter() - start


def pictures(pred_fn, path: Path) -> None:  # noqa: ANN001
    """Held-out GT | avatar on white (top row) and on black (bottom row), 4 frames."""
    import imageio.v3 as iio
    import torch

    rows = []
    for background in (1.0, 0.0):
        pred, gt, _ = pred_fn(background)
        index = np.linspace(0, len(pred) - 1, 4).astype(int)
        rows.append(torch.cat([torch.cat([gt[i], pred[i]], -1) for i in index], -1))
    image = torch.cat(rows, -2).clamp(0, 1).permute(1, 2, 0).numpy()
    iio.imwrite(path, (image * 255).round().astype(np.uint8))


def evaluate(avatar: Path, subject: Path, pictures_path: Path) -> dict:
    """Held-out metrics: whole frame and person only on black (the training background of the
    older recipe), and person only on white (where a wrong alpha shows as a ghost); the pictures."""
    import tempfile

    import torch

    from ram_avatar import metrics
    from ram_avatar.body import load_template
    from ram_avatar.data import load_subject
    from ram_avatar.evaluation.evaluate import held_out_split, load_network, render_held_out

    model, info = load_network(avatar / "avatar")
    data = load_subject(subject)
    _, frames = held_out_split(data, None, info)
    template = load_template(data.template.name)
    with tempfile.TemporaryDirectory() as cache:
        render = lambda bg: render_held_out(model, data, template, frames, bg, torch.device("cpu"), Path(cache), False)  # noqa: E731
        pictures(render, pictures_path)
        pred, gt, mask = render(0.0)
        white = render(1.0)
    names = ("psnr", "ssim", "lpips_alex")
    whole = {k: r.value for k, r in metrics.evaluate(pred, gt, metrics=names).items()}
    person = {k: r.value for k, r in metrics.evaluate(pred, gt, mask, metrics=names).items()}
    # Masked metrics put both images on black: on white, person pixels alone (mask-weighted PSNR).
    person_white = {"psnr": float(metrics.psnr(*white).mean())}
    return {"whole": whole, "person": person, "person_white": person_white, "steps": info.get("steps")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", nargs="+", default=CLIPS, help="clip names in ../shared/data/video")
    parser.add_argument("--minutes", nargs="+", type=float, default=[5, 15, 30])
    parser.add_argument(
        "--ram-avatar",
        default=str(Path(sys.executable).with_name("ram-avatar")),
        help="the ram-avatar executable to measure",
    )
    parser.add_argument("--label", default="this checkout")
    parser.add_argument(
        "--threads", type=int, default=None, help="PyTorch threads of the create runs (default: its own choice)"
    )
    parser.add_argument("--out", default=str(ROOT / "outputs" / "create_quality"))
    args = parser.parse_args()

    out = Path(args.out) / args.label.replace(" ", "-")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for clip in args.clips:
        video = VIDEOS / clip
        if not video.is_file():
            sys.exit(f"{video} is missing: this benchmark uses the shared clips beside the project")
        name = Path(clip).stem
        subject = out / f"{name}.subject"
        if not (subject / "meta.json").is_file():
            run(
                [args.ram_avatar, "track", str(video), str(subject), "--resolution", "256", "--overwrite"],
                out / f"{name}.track.log",
                None,
            )
        for minutes in args.minutes:
            avatar = out / f"{name}-{minutes:g}min"
            work = Path(str(avatar) + ".work")
            for folder in (avatar, work):
                shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(subject, work / "subject")  # create skips tracking when the subject exists
            seconds = run(
                [args.ram_avatar, "create", str(video), str(avatar), "--minutes", f"{minutes:g}", "--no-mda"],
                out / f"{avatar.name}.log",
                args.threads,
            )
            scores = evaluate(avatar, subject, out / f"{avatar.name}.png")
            results.append({"clip": name, "minutes": minutes, "seconds": round(seconds), **scores})
            (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
            shutil.rmtree(work / "train" / "checkpoints", ignore_errors=True)  # keep the disk use small

    print(f"\n{args.label}: held-out frames; whole frame on black | person only (GT mask)\n")
    print("| clip | minutes | steps | " + " | ".join(f"{kind} {name}" for name, kind in COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for r in results:
        cells = [r[kind][name] for name, kind in COLUMNS]
        print(
            f"| {r['clip']} | {r['minutes']:g} | {r['steps']} | "
            + " | ".join("n/a" if c is None else f"{c:.4g}" for c in cells)
            + " |"
        )


if __name__ == "__main__":
    main()
