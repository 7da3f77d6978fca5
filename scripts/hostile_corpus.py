"""Run a corpus of bad inputs and faults against the ``ram-avatar`` CLI and print what happened.

Each case builds its input in a scratch folder, runs one command in a child process and records
the exit code, whether a traceback was printed, the error line, the child's peak memory, its time
and the hidden files ("litter") left in the scratch folder. A change that touches input handling
can re-run it and compare the table::

    python scripts/hostile_corpus.py                 # all cases (~3 min on 2 cores)
    python scripts/hostile_corpus.py --only bvh      # cases whose name contains "bvh"
    python scripts/hostile_corpus.py --big-frames 200000   # the issue's 200,000-frame BVH (~131 MB)

A case passes when the command exits with the expected code (2 for a refused input), prints no
traceback, leaves no litter and stays under its memory bound. Exit status: 1 when a case fails.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVATAR = ROOT / "examples" / "avatars" / "dancer-rt256"
WAVE = ROOT / "examples" / "motions" / "wave_hello.bvh"
CLIP = ROOT / "examples" / "clips" / "dancer.mp4"


class Skip(Exception):
    """A case that cannot run on this machine (the reason is printed)."""


@dataclass
class Case:
    name: str
    setup: Callable[[Path], list[str]]  # scratch folder -> ram-avatar arguments
    expect: int = 2  # exit code
    max_mb: float = 1500.0  # peak resident memory bound
    fsize: int | None = None  # RLIMIT_FSIZE in bytes: a "full disk"
    cleanup: Callable[[Path], None] | None = None
    check: Callable[[Path], str | None] | None = None  # extra check on the scratch folder -> problem or None
    result: dict = field(default_factory=dict)


def _json_motion(folder: Path, fps: float, frames: int = 4, value: float = 0.0) -> Path:
    path = folder / "motion.json"
    body = [[value] * 63 for _ in range(frames)]
    path.write_text(json.dumps({"fps": fps, "body_pose": body, "global_orient": [[0.0] * 3] * frames}))
    return path


def _big_bvh(folder: Path, frames: int) -> Path:
    """``wave_hello.bvh``'s skeleton with its motion repeated to ``frames`` frames."""
    text = WAVE.read_text()
    head, motion = text.split("MOTION", 1)
    lines = [line for line in motion.strip().splitlines()[2:] if line.strip()]
    path = folder / f"big{frames}.bvh"
    with path.open("w") as f:
        f.write(f"{head}MOTION\nFrames: {frames}\nFrame Time: 0.00833333\n")
        for i in range(frames):
            f.write(lines[i % len(lines)] + "\n")
    return path


def _avatar_copy(folder: Path) -> Path:
    copy = folder / "avatar"
    shutil.copytree(AVATAR, copy)
    return copy


def _edit_json(path: Path, **changes) -> None:
    content = json.loads(path.read_text())
    content.update(changes)
    path.write_text(json.dumps(content))


def _animate(avatar: Path | str, motion: Path | str, out: Path, *extra: str) -> list[str]:
    return ["animate", str(avatar), str(motion), str(out), "--max-frames", "4", "--no-audio", *extra]


def _tiny_video(folder: Path, frames: int, size: int = 64, name: str = "clip.mp4") -> Path:
    import imageio.v3 as iio
    import numpy as np

    path = folder / name
    iio.imwrite(path, np.full((frames, size, size, 3), 128, np.uint8), fps=30, codec="libx264")
    return path


def _mode_is_umask(name: str) -> Callable[[Path], str | None]:
    def check(folder: Path) -> str | None:
        path = folder / name
        if not path.exists():
            return f"{name} not written"
        mode, wanted = path.stat().st_mode & 0o777, 0o666 & ~_umask()
        return None if mode == wanted else f"{name} mode {mode:o}, umask gives {wanted:o}"

    return check


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cases(big_frames: int) -> list[Case]:
    def safetensors_truncated(d: Path) -> list[str]:
        avatar = _avatar_copy(d)
        weights = avatar / "avatar" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:5000])
        return _animate(avatar, WAVE, d / "out.mp4")

    def safetensors_garbage_header(d: Path) -> list[str]:
        avatar = _avatar_copy(d)
        (avatar / "pose_decoder" / "model.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")
        return _animate(avatar, WAVE, d / "out.mp4")

    def config_huge(d: Path) -> list[str]:
        avatar = _avatar_copy(d)
        _edit_json(avatar / "avatar" / "config.json", texture_channels=10**6)
        return _animate(avatar, WAVE, d / "out.mp4")

    def config_negative(d: Path) -> list[str]:
        avatar = _avatar_copy(d)
        _edit_json(avatar / "avatar" / "config.json", widths=[-16, 24, 32, 48])
        return _animate(avatar, WAVE, d / "out.mp4")

    def image_size_huge(d: Path) -> list[str]:
        avatar = _avatar_copy(d)
        _edit_json(avatar / "avatar.json", image_size=[100000, 100000])
        return _animate(avatar, WAVE, d / "out.mp4")

    def zero_frame_npz(d: Path) -> list[str]:
        import numpy as np

        path = d / "empty.npz"
        np.savez(
            path,
            poses=np.zeros((0, 165), np.float32),
            trans=np.zeros((0, 3), np.float32),
            mocap_framerate=np.array(30.0),
        )
        return _animate(AVATAR, path, d / "out.mp4")

    def bad_bvh(d: Path) -> list[str]:
        path = d / "picture.bvh"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
        return _animate(AVATAR, path, d / "out.mp4")

    def read_only_output(d: Path) -> list[str]:
        locked = d / "locked"
        locked.mkdir()
        if os.geteuid() != 0:
            locked.chmod(0o555)
        else:  # root ignores folder modes: a read-only filesystem instead (needs mount rights)
            mounted = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(locked)], capture_output=True
            )
            if mounted.returncode:
                raise Skip("running as root without mount rights: folder modes would not apply")
        return _animate(AVATAR, WAVE, locked / "out.mp4")

    def unmount(d: Path) -> None:
        if os.path.ismount(d / "locked"):
            subprocess.run(["umount", str(d / "locked")], check=True)

    def track_existing(d: Path) -> list[str]:
        clip = _tiny_video(d, 8)
        (d / "subject").mkdir()
        (d / "subject" / "meta.json").write_text("{}")
        return ["track", str(clip), str(d / "subject")]

    def out_parent_is_file(d: Path) -> list[str]:
        (d / "file").write_text("x")
        return _animate(AVATAR, WAVE, d / "file" / "out.mp4")

    def resume_bad_optimizer(d: Path) -> list[str]:
        # the tests' synthetic subject (a posed template, made in code) stands in for a tracked clip;
        # two real training steps write a real checkpoint, whose optimizer file is then damaged
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); from tests.pipeline_fixture import synthetic_subject; "
            "from ram_avatar.body import load_template; from ram_avatar.data import write_subject; "
            "write_subject(sys.argv[2], synthetic_subject(load_template('anny')))"
        )
        subprocess.run([sys.executable, "-c", code, str(ROOT), str(d / "subject")], check=True, capture_output=True)
        train = ["train", str(d / "subject"), str(d / "run"), "--steps", "2", "--perceptual-size", "0"]
        subprocess.run(
            [sys.executable, "-m", "ram_avatar.cli", "--threads", "1", *train], check=True, capture_output=True
        )
        for optimizer in (d / "run" / "checkpoints" / "last").glob("optimizer*"):
            optimizer.write_bytes(optimizer.read_bytes()[:100])
        return [*train[:3], "--steps", "3", "--perceptual-size", "0", "--resume"]

    return [
        Case("json fps 1e-6", lambda d: _animate(AVATAR, _json_motion(d, 1e-6), d / "out.mp4")),
        Case("json fps 1e-300", lambda d: _animate(AVATAR, _json_motion(d, 1e-300), d / "out.mp4")),
        Case("json NaN values", lambda d: _animate(AVATAR, _json_motion(d, 30, value=float("nan")), d / "out.mp4")),
        Case(
            "convert 1e308 (float32 overflow)",
            lambda d: ["motion", "convert", str(_json_motion(d, 30, value=1e308)), str(d / "out.npz")],
        ),
        Case(
            "convert output mode",
            lambda d: ["motion", "convert", str(WAVE), str(d / "wave.npz")],
            expect=0,
            check=_mode_is_umask("wave.npz"),
        ),
        Case("zero-frame npz", zero_frame_npz),
        Case("png renamed .bvh", bad_bvh),
        Case("wave_hello.bvh, --max-frames 4 (baseline)", lambda d: _animate(AVATAR, WAVE, d / "out.mp4"), expect=0),
        Case(
            f"bvh {big_frames} frames, --max-frames 4",
            lambda d: _animate(AVATAR, _big_bvh(d, big_frames), d / "out.mp4"),
            expect=0,
            max_mb=1500,
        ),
        Case("truncated model.safetensors", safetensors_truncated),
        Case("safetensors header 10^12 bytes", safetensors_garbage_header),
        Case("config.json 10^6 channels", config_huge),
        Case("config.json negative width", config_negative),
        Case("avatar.json image_size 100000", image_size_huge),
        Case("missing avatar folder", lambda d: _animate(d / "nothing", WAVE, d / "out.mp4")),
        Case("missing motion", lambda d: _animate(AVATAR, d / "nothing.bvh", d / "out.mp4")),
        Case("output is a directory", lambda d: (d / "out.mp4").mkdir() or _animate(AVATAR, WAVE, d / "out.mp4")),
        Case("output parent is a file", out_parent_is_file),
        Case("read-only output folder", read_only_output, cleanup=unmount),
        Case("full disk (animate)", lambda d: _animate(AVATAR, WAVE, d / "out.mp4"), fsize=20_000),
        Case(
            "full disk (track)",
            lambda d: ["track", str(CLIP), str(d / "subject"), "--resolution", "64", "--max-frames", "12"],
            fsize=300_000,
        ),
        Case("track missing clip", lambda d: ["track", str(d / "nothing.mp4"), str(d / "subject")]),
        Case("track empty video", lambda d: ["track", str(_empty(d)), str(d / "subject")]),
        Case("track no person", lambda d: ["track", str(_tiny_video(d, 12)), str(d / "subject")]),
        Case("track into existing dataset", track_existing),
        Case("train resume, bad optimizer file", resume_bad_optimizer),
    ]


def _empty(folder: Path) -> Path:
    path = folder / "empty.mp4"
    path.write_bytes(b"")
    return path


def run_case(case: Case, scratch: Path) -> dict:
    folder = scratch / case.name.replace(" ", "_").replace("/", "_")
    folder.mkdir(parents=True)
    try:
        args = case.setup(folder)
    except Skip as reason:
        return {"case": case.name, "exit": "-", "peak_mb": 0.0, "seconds": 0.0, "message": "", "skipped": str(reason)}
    try:
        return _run(case, folder, args, scratch)
    finally:
        if case.cleanup is not None:
            case.cleanup(folder)


def _run(case: Case, folder: Path, args: list[str], scratch: Path) -> dict:
    before = set(_hidden(folder))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")

    def limits() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        if case.fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize, case.fsize))

    log = scratch / f"{folder.name}.stderr"
    start = time.perf_counter()
    with log.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "ram_avatar.cli", "--threads", "1", *args],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=limits,
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory, not all children's
    seconds = time.perf_counter() - start
    exit_code = os.waitstatus_to_exitcode(status)
    peak_mb = usage.ru_maxrss / 1024
    err = log.read_text(errors="replace")
    litter = sorted(set(_hidden(folder)) - before)
    problems = []
    if exit_code != case.expect:
        problems.append(f"exit {exit_code}, expected {case.expect}")
    if "Traceback" in err:
        problems.append("traceback")
    if litter:
        problems.append("litter: " + ", ".join(litter))
    if peak_mb > case.max_mb:
        problems.append(f"peak {peak_mb:.0f} MB > {case.max_mb:.0f}")
    if case.check is not None and (problem := case.check(folder)):
        problems.append(problem)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return {
        "case": case.name,
        "exit": exit_code,
        "peak_mb": peak_mb,
        "seconds": seconds,
        "message": lines[-1][:150] if lines else "",
        "problems": problems,
        "skipped": None,
    }


def _hidden(folder: Path) -> list[str]:
    """Hidden files and folders and *.partial files under ``folder``, relative."""
    found = []
    for path in folder.rglob("*"):
        name = path.name
        if name.startswith(".") or ".partial" in name or ".writing-" in name:
            found.append(str(path.relative_to(folder)))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    parser.add_argument("--big-frames", type=int, default=50_000, help="frames of the big BVH (issue: 200000)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ram-avatar-hostile-"))
    failed = 0
    print("| case | exit | peak MB | s | result | message |\n|---|---|---|---|---|---|")
    try:
        for case in cases(args.big_frames):
            if args.only and args.only not in case.name:
                continue
            r = run_case(case, scratch)
            if r["skipped"]:
                verdict = f"skipped: {r['skipped']}"
            else:
                failed += bool(r["problems"])
                verdict = "ok" if not r["problems"] else "FAIL: " + "; ".join(r["problems"])
            message = r["message"].replace("|", "\\|")
            print(
                f"| {r['case']} | {r['exit']} | {r['peak_mb']:.0f} | {r['seconds']:.1f} | {verdict} | {message} |",
                flush=True,
            )
    finally:
        if args.keep:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
