"""Motion files are bounded before work is done (issue 19): frame rates, frames kept, file size,
BVH memory, values float32 can hold, empty clips."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ram_avatar.body.layout import NUM_JOINTS, SmplxPose
from ram_avatar.limits import LimitError
from ram_avatar.motion import Motion, MotionFormatError, load_motion, save_motion

# A small Mixamo-named rig (centimetres, +Y up, facing +Z, left = +X): (name, parent, offset).
RIG = [
    ("Hips", None, (0, 90, 0)),
    ("Spine", "Hips", (0, 10, 0)),
    ("Spine1", "Spine", (0, 30, 0)),
    ("Neck", "Spine1", (0, 12, 0)),
    ("Head", "Neck", (0, 10, 0)),
    ("LeftUpLeg", "Hips", (10, 0, 0)),
    ("LeftLeg", "LeftUpLeg", (0, -42, 0)),
    ("LeftFoot", "LeftLeg", (0, -42, 0)),
    ("RightUpLeg", "Hips", (-10, 0, 0)),
    ("RightLeg", "RightUpLeg", (0, -42, 0)),
    ("RightFoot", "RightLeg", (0, -42, 0)),
    ("LeftArm", "Spine1", (18, 10, 0)),
    ("LeftForeArm", "LeftArm", (28, 0, 0)),
    ("LeftHand", "LeftForeArm", (25, 0, 0)),
    ("RightArm", "Spine1", (-18, 10, 0)),
    ("RightForeArm", "RightArm", (-28, 0, 0)),
    ("RightHand", "RightForeArm", (-25, 0, 0)),
]
CHANNELS = 6 + 3 * (len(RIG) - 1)


def hierarchy() -> list[str]:
    lines = ["HIERARCHY"]

    def write(name: str, parent: str | None, offset: tuple, depth: int) -> None:
        pad = "  " * depth
        lines.extend(
            [
                f"{pad}{'JOINT' if parent else 'ROOT'} {name}",
                pad + "{",
                f"{pad}  OFFSET {offset[0]:.2f} {offset[1]:.2f} {offset[2]:.2f}",
                f"{pad}  CHANNELS "
                + ("3" if parent else "6 Xposition Yposition Zposition")
                + " Zrotation Xrotation Yrotation",
            ]
        )
        for child in RIG:
            if child[1] == name:
                write(*child, depth + 1)
        lines.append(pad + "}")

    write(*RIG[0], 0)
    return lines


def frame_line(i: int) -> str:
    """Frame i: the root walks along +Z, every joint sways a little."""
    angles = 10 * np.sin(0.1 * i + np.arange(CHANNELS - 3))
    return " ".join(f"{v:.4f}" for v in [0.0, 90.0, 0.5 * i, *angles])


def write_bvh(
    path: Path,
    frames: int,
    frame_time: str = "0.0333333",
    header_frames: int | None = None,
    lines: list[str] | None = None,
    hierarchy_lines: list[str] | None = None,
) -> Path:
    """A BVH of RIG with ``frames`` frame lines (``lines`` instead, when given)."""
    with path.open("w") as f:
        header = frames if header_frames is None else header_frames
        f.write("\n".join(hierarchy_lines or hierarchy()) + f"\nMOTION\nFrames: {header}\nFrame Time: {frame_time}\n")
        for line in lines if lines is not None else (frame_line(i) for i in range(frames)):
            f.write(line + "\n")
    return path


def smplx_json(path: Path, frames: int, fps: float | None = 30.0, transl_z: float = 0.0) -> Path:
    content: dict = {
        "global_orient": np.zeros((frames, 3)).tolist(),
        "body_pose": np.zeros((frames, 63)).tolist(),
        "transl": [[0.0, 0.0, transl_z]] * frames,
    }
    if frames:
        content["body_pose"][0][5] = 0.5  # not all at rest
    if fps is not None:
        content["fps"] = fps
    path.write_text(json.dumps(content))
    return path


def convert(*argv: str) -> int:
    from ram_avatar.motion import cli

    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["motion", "convert", *argv])
    return args.run(args)


# ----------------------------------------------------------------------------- 1. frame rates


@pytest.mark.parametrize(
    "kind, rate, fps",
    [("json", 1e-6, None), ("json", 1e-300, 30.0), ("npz", 1e-6, None), ("bvh", 1e-6, None), ("bvh", 1e300, 30.0)],
)
def test_frame_rates_outside_the_limit_are_refused_on_load(tmp_path, kind, rate, fps):
    """fps 1e-6 asked ~105 GB of the resampler; 1e-300 raised OverflowError."""
    if kind == "json":
        path = smplx_json(tmp_path / "slow.json", 2, fps=rate)
    elif kind == "npz":
        path = tmp_path / "slow.npz"
        np.savez(path, poses=np.zeros((2, 156)), trans=np.zeros((2, 3)), mocap_framerate=np.array(rate))
    else:
        path = write_bvh(tmp_path / "slow.bvh", 2, frame_time=repr(1 / rate))
    with pytest.raises(LimitError, match=f"{path.name}: frames per second .* must be between") as error:
        load_motion(path, fps)
    assert "\n" not in str(error.value) and "RAM_AVATAR_LIMIT_FPS" in str(error.value)


def test_the_frame_rate_limit_can_be_raised(tmp_path, monkeypatch):
    path = smplx_json(tmp_path / "slow.json", 2, fps=1e-6)
    with pytest.raises(LimitError, match="RAM_AVATAR_LIMIT_FPS"):
        load_motion(path)
    monkeypatch.setenv("RAM_AVATAR_LIMIT_FPS", "1e-7,1000")
    assert load_motion(path).fps == 1e-6


# ----------------------------------------------------------------------------- 2. frames kept


def test_resampling_builds_only_the_frames_kept(tmp_path, monkeypatch):
    """Two frames 10 s apart at 1000 fps are 10,001 frames: over a limit of 1,000 they are
    refused before any is built; with max_frames 8, the 8 kept are right."""
    monkeypatch.setenv("RAM_AVATAR_LIMIT_MOTION_FRAMES", "1000")
    full = torch.zeros(2, NUM_JOINTS, 3)
    full[1, 18, 1] = 1.0  # the left elbow turns by 1 rad over the 10 s
    transl = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    motion = Motion(SmplxPose.from_full(full, transl), 0.1, "slow", "memory")
    with pytest.raises(LimitError, match="slow: frames of motion kept .* is 10001.*RAM_AVATAR_LIMIT_MOTION_FRAMES"):
        motion.resample(1000.0)
    kept = motion.resample(1000.0, max_frames=8)
    t = torch.arange(8) / 1000.0
    assert kept.num_frames == 8 and kept.fps == 1000.0
    torch.testing.assert_close(kept.pose.full()[:, 18, 1], t / 10, atol=1e-6, rtol=0)
    torch.testing.assert_close(kept.pose.transl[:, 0], t, atol=1e-6, rtol=0)

    path = smplx_json(tmp_path / "slow.json", 2, fps=0.1)
    with pytest.raises(LimitError, match="slow.json"):
        load_motion(path, fps=1000.0)
    assert load_motion(path, fps=1000.0, max_frames=8).num_frames == 8


# ----------------------------------------------------------------------------- 3. file size


def test_file_size_is_checked_before_reading(tmp_path, monkeypatch):
    monkeypatch.setenv("RAM_AVATAR_LIMIT_MOTION_FILE_MB", "0.001")  # 1 KiB
    broken = tmp_path / "broken.json"
    broken.write_text("{" * 2000)  # not even parsed: the size is refused first
    with pytest.raises(LimitError, match="broken.json: size of a motion file"):
        load_motion(broken)
    with pytest.raises(LimitError, match="big.bvh: size of a motion file"):
        load_motion(write_bvh(tmp_path / "big.bvh", 10))
    # A compressed .npz is small on disk, not once unpacked.
    monkeypatch.setenv("RAM_AVATAR_LIMIT_MOTION_FILE_MB", "1")
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, poses=np.zeros((4000, 156)), trans=np.zeros((4000, 3)), mocap_framerate=np.array(30.0))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(LimitError, match=r"zeros.npz \(unpacked\)"):
        load_motion(path)


# ----------------------------------------------------------------------------- 4. BVH memory


def _peak_rss_mb(path: Path) -> float:
    """Peak resident memory (MB) of a fresh process that loads 8 frames of ``path``."""
    code = (
        "import resource, sys\nfrom ram_avatar.motion import load_motion\n"
        "assert load_motion(sys.argv[1], fps=30, max_frames=8).num_frames == 8\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.split()[-1]) / 1024


def test_bvh_memory_grows_with_the_frames_kept_not_the_file(tmp_path):
    """A 60,000-frame BVH (~27 MB) read whole took ~45x its size; 8 frames of it need no more
    than 8 frames of a 100-frame file."""
    small = write_bvh(tmp_path / "small.bvh", 100)
    big = write_bvh(tmp_path / "big.bvh", 60_000)
    assert big.stat().st_size > 20e6
    assert _peak_rss_mb(big) - _peak_rss_mb(small) < 100


def test_bvh_frames_after_the_last_one_kept_are_not_read(tmp_path):
    frames = [frame_line(i) for i in range(20)] + ["not numbers"] * 5
    path = write_bvh(tmp_path / "tail.bvh", 25, lines=frames)
    with pytest.raises(MotionFormatError, match="line .* \\(frame 20\\)"):
        load_motion(path)
    clean = load_motion(write_bvh(tmp_path / "clean.bvh", 20), canonical=False)
    kept = load_motion(path, max_frames=8, canonical=False)
    assert kept.num_frames == 8 and kept.fps == 30
    torch.testing.assert_close(kept.pose.full(), clean.pose.full()[:8], atol=1e-5, rtol=0)
    halved = load_motion(path, fps=15, max_frames=8, canonical=False)  # source frames 0, 2, .. 14
    torch.testing.assert_close(halved.pose.full(), clean.pose.full()[:16:2], atol=1e-5, rtol=0)
    with pytest.raises(MotionFormatError, match="header says 1000000000 frames, more than the file"):
        load_motion(write_bvh(tmp_path / "liar.bvh", 3, header_frames=10**9), max_frames=8)


def test_a_bvh_skeleton_is_bounded(tmp_path):
    """A hierarchy cannot grow without bound either: joints are counted, channels not repeated."""
    chain = [f"JOINT j{i}\n{{\nOFFSET 0 1 0\nCHANNELS 3 Xrotation Yrotation Zrotation" for i in range(1000)]
    path = tmp_path / "tall.bvh"
    path.write_text(
        "HIERARCHY\nROOT Hips\n{\nOFFSET 0 0 0\nCHANNELS 3 Xrotation Yrotation Zrotation\n"
        + "\n".join(chain)
        + "\n}" * 1001
        + "\nMOTION\nFrames: 1\nFrame Time: 0.1\n"
        + "0 " * 3003
    )
    with pytest.raises(LimitError, match="tall.bvh: joints in a BVH file's skeleton is 1001"):
        load_motion(path)
    lines = hierarchy()
    lines[4] = lines[4].replace("Zrotation", "Xrotation")
    with pytest.raises(MotionFormatError, match="line 5: CHANNELS names a channel twice"):
        load_motion(write_bvh(tmp_path / "twice.bvh", 1, lines=[frame_line(0)], hierarchy_lines=lines))


# ----------------------------------------------------------------------------- 5. motion convert


def test_motion_convert_refuses_values_float32_cannot_hold(tmp_path):
    """1e308 is finite as float64 but inf as the float32 that is stored."""
    path = smplx_json(tmp_path / "far.json", 3, transl_z=1e308)
    out = tmp_path / "far.npz"
    with pytest.raises(MotionFormatError, match="far.json: 'transl' holds .* too large for float32"):
        convert(str(path), str(out))
    assert not out.exists() and list(tmp_path.iterdir()) == [path]
    pose = SmplxPose.zeros(2)
    pose.transl[1, 0] = math.inf
    with pytest.raises(MotionFormatError, match="first at frame 1"):
        save_motion(Motion(pose, 30.0, "inf", "memory"), out)
    assert not out.exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_converted_files_get_the_umask_permissions(tmp_path, umask, mode):
    path = smplx_json(tmp_path / "clip.json", 3)
    old = os.umask(umask)
    try:
        assert convert(str(path), str(tmp_path / "clip.npz")) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "clip.npz").stat().st_mode & 0o777 == mode


# ----------------------------------------------------------------------------- 6. empty clips


def _empty(tmp_path: Path, kind: str) -> Path:
    if kind == "amass":
        np.savez(
            path := tmp_path / "empty.npz",
            poses=np.zeros((0, 156)),
            trans=np.zeros((0, 3)),
            mocap_framerate=np.array(30.0),
        )
    elif kind == "smplx":
        np.savez(
            path := tmp_path / "empty.npz",
            global_orient=np.zeros((0, 3)),
            body_pose=np.zeros((0, 63)),
            fps=np.array(30.0),
        )
    elif kind == "json":
        path = smplx_json(tmp_path / "empty.json", 0)
    elif kind == "json-list":
        (path := tmp_path / "empty.json").write_text("[]")
    else:
        path = write_bvh(tmp_path / "empty.bvh", 0)
    return path


@pytest.mark.parametrize("kind", ["amass", "smplx", "json", "json-list", "bvh"])
def test_a_motion_file_without_frames_says_so(tmp_path, kind):
    path = _empty(tmp_path, kind)
    with pytest.raises(MotionFormatError, match=f"^the motion file {path.name} has no frames"):
        load_motion(path)
