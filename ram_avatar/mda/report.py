"""What ``ram-avatar align apply`` writes next to the aligned motion: an OOD plot and a table."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ram_avatar.atomic import staged_file
from ram_avatar.mda.align import OOD_RANGE, AlignResult


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` as the whole file at ``path`` (with the umask's mode, as every output), or nothing."""
    with staged_file(path) as tmp:
        tmp.write_bytes(data)


def plot_ood(
    result: AlignResult,
    fps: float,
    path: str | os.PathLike,
    title: str = "",
    ood_range: tuple[float, float] | None = OOD_RANGE,
) -> Path:
    """PNG of the per-frame OOD score before / after alignment (with the score above which MDA
    acts, ``ood_range[0]``) and of the per-joint change."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; also safe when called from a server
    import matplotlib.pyplot as plt

    seconds = [i / fps for i in range(len(result.ood_before))]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, height_ratios=(2, 1))
    top.plot(seconds, result.ood_before.cpu().numpy(), label="driving motion", color="tab:red")
    top.plot(seconds, result.ood_after.cpu().numpy(), label="after align", color="tab:blue")
    top.axhline(1.0, color="gray", linestyle="--", linewidth=1, label="typical subject pose")
    if ood_range is not None:
        top.axhline(ood_range[0], color="gray", linestyle=":", linewidth=1, label="MDA acts above")
    top.set_ylabel("OOD score")
    top.set_yscale("log")
    top.legend(loc="upper right")
    top.set_title(title or "distance to the subject's pose distribution")
    bottom.plot(seconds, result.change_deg.cpu().numpy(), color="tab:green")
    bottom.set_ylabel("change (deg / joint)")
    bottom.set_xlabel("time (s)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    _write_atomic(path, buffer.getvalue())
    return path


def write_ood_csv(result: AlignResult, fps: float, path: str | os.PathLike) -> Path:
    """CSV with one row per frame: frame, time_s, ood_before, ood_after, change_deg."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["frame", "time_s", "ood_before", "ood_after", "change_deg"])
    rows = zip(result.ood_before.tolist(), result.ood_after.tolist(), result.change_deg.tolist())
    for i, (before, after, change) in enumerate(rows):
        writer.writerow([i, f"{i / fps:.4f}", f"{before:.4f}", f"{after:.4f}", f"{change:.3f}"])
    path = Path(path)
    _write_atomic(path, text.getvalue().encode())
    return path
