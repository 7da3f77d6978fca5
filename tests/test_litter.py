"""No litter: a failed or killed run leaves nothing beside its outputs (what it half-wrote is
removed on failure, or by the next run when it was killed), a full disk is left as it was, and
every output gets the umask's permissions."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ram_avatar.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "avatars" / "dancer-rt256"
MOTION = ROOT / "examples" / "motions" / "wave_hello.bvh"


def dead_pid() -> int:
    """The id of a process that has exited (as one killed with kill -9 has)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def fake_detections(frames: int = 2, size: int = 64):
    """A :class:`~ram_avatar.tracking.detect.Detections` of ``frames`` noise frames (no MediaPipe run)."""
    from ram_avatar.tracking.detect import Detections

    rng = np.random.default_rng(0)
    points = {"body": 33, "left_hand": 21, "right_hand": 21, "face": 478}
    return Detections(
        frames=rng.integers(0, 255, (frames, size, size, 3), np.uint8),
        masks=np.zeros((frames, size, size), np.uint8),
        keypoints={k: np.zeros((frames, n, 3), np.float32) for k, n in points.items()},
        crop_boxes=np.tile(np.float32([0, 0, size, size]), (frames, 1)),
        K=np.tile(np.eye(3, dtype=np.float32), (frames, 1, 1)),
        fps=30.0,
        source_size=(size, size),
        frame_indices=np.arange(frames),
        found={k: np.zeros(frames, bool) for k in points},
    )


@pytest.fixture
def umask_027():
    """Run with umask 027 (so outputs must be 0o640: neither 0o600 nor a hard-coded 0o644)."""
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_a_missing_clip_leaves_no_work_folder(tmp_path, capsys):
    assert main(["track", str(tmp_path / "missing.mp4"), str(tmp_path / "subject")]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_during_tracking_leaves_the_disk_as_it_was(tmp_path, capsys, monkeypatch):
    """The detect stage's file is half-written when the disk fills: it goes, and so does the work
    folder (nothing finished); the one error line names the file it was writing."""
    from ram_avatar.tracking import pipeline

    def savez_on_a_full_disk(file, **arrays) -> None:
        file.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pipeline, "detect_clip", lambda *a, **k: fake_detections())
    monkeypatch.setattr(np, "savez", savez_on_a_full_disk)
    (tmp_path / "clip.mp4").write_bytes(b"a clip")
    assert main(["track", str(tmp_path / "clip.mp4"), str(tmp_path / "out" / "subject")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ram-avatar track: error: no space left on the device holding ") and "detect.npz" in err, err
    assert len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.rglob("*")] == ["clip.mp4"]  # not even the output's new parent


def test_the_file_size_limit_leaves_no_partial_files(tmp_path):
    """Real writes that fail (``ulimit -f``: EFBIG), in a child process: a tracking stage and a
    video. Each error names the output, not its temporary name; no partial file stays."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_litter import fake_detections
        from ram_avatar.cli import main
        from ram_avatar.pipelines.video import VideoWriter
        from ram_avatar.tracking import pipeline

        pipeline.detect_clip = lambda *a, **k: fake_detections(frames=8, size=128)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        print("track", main(["track", "clip.mp4", "subject"]))
        try:
            with VideoWriter("video.mp4", 30) as video:
                for i in range(100):
                    video.write(np.random.default_rng(i).integers(0, 255, (128, 128, 3), np.uint8))
        except OSError as error:
            print("video", error.errno, error.filename)
    """)
    (tmp_path / "clip.mp4").write_bytes(b"a clip")
    child = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["track", "2", "video", str(errno.EFBIG), "video.mp4"], child.stdout + child.stderr
    assert "over the file size limit" in child.stderr and "detect.npz" in child.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_a_dataset_half_written_by_a_killed_run_is_removed_by_the_next(tmp_path, capsys, monkeypatch):
    """kill -9 while the dataset was being written leaves its staging folder; the next ``track``
    (any run, with --resume or not) removes it; a running process's is left alone."""
    from ram_avatar.tracking import pipeline
    from ram_avatar.tracking.video import TrackingError

    killed = tmp_path / f".subject.partial-{dead_pid()}-0a1b2c3d"
    running = tmp_path / f".subject.partial-{os.getpid()}-0a1b2c3d"
    for folder in (killed, running):
        (folder / "frames").mkdir(parents=True)
        (folder / "frames" / "000000.png").write_bytes(b"png")

    def nobody(*args, **kwargs):
        raise TrackingError("nobody was found")

    monkeypatch.setattr(pipeline, "detect_clip", nobody)
    assert main(["track", str(MOTION), str(tmp_path / "subject"), "--resume"]) == 2
    assert "nobody was found" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [running]


def test_a_folder_replaced_when_the_run_was_killed_is_put_back(tmp_path, anny_template):
    """Killed between moving the old dataset aside and renaming the new one in: the next write
    restores the old one rather than deleting the only copy, then replaces it."""
    import pipeline_fixture

    from ram_avatar.data import load_subject, write_subject

    data = pipeline_fixture.synthetic_subject(anny_template)
    moved_aside = write_subject(tmp_path / f".subject.partial-{dead_pid()}-0a1b2c3d.old", data)
    write_subject(tmp_path / "subject", data, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subject"] and not moved_aside.exists()
    assert load_subject(tmp_path / "subject").num_frames == pipeline_fixture.N


def test_a_video_that_cannot_be_renamed_into_place_leaves_no_partial(tmp_path):
    from ram_avatar.pipelines.video import VideoWriter

    out = tmp_path / "clip.mp4"
    stale = tmp_path / f".clip.mp4.partial-{dead_pid()}-0a1b2c3d.mp4"  # from a killed run
    stale.write_bytes(b"half a video")
    writer = VideoWriter(out, 30)
    assert not stale.exists()
    writer.write(np.zeros((16, 16, 3), np.uint8))
    out.mkdir()  # the path became a folder while rendering
    with pytest.raises(IsADirectoryError) as raised:
        writer.close()
    assert raised.value.filename2 == str(out) or raised.value.filename == str(out)
    assert sorted(tmp_path.iterdir()) == [out]


def test_outputs_get_the_umask_mode_and_nothing_else_is_left(tmp_path, umask_027, capsys):
    """animate's video and OOD plot, align's plot and table: 0o666 less the umask (mkstemp's
    files are 0o600), and no hidden file beside them."""
    import torch

    from ram_avatar.mda.align import AlignResult
    from ram_avatar.mda.report import plot_ood, write_ood_csv

    out = tmp_path / "wave.mp4"
    assert main(["--threads", "1", "animate", str(EXAMPLE), str(MOTION), str(out), "--max-frames", "2"]) == 0
    scores = torch.tensor([1.0, 5.0])
    result = AlignResult(None, scores, scores / 2, torch.tensor([0.0, 3.0]), None)
    plot_ood(result, 30.0, tmp_path / "aligned.png")
    write_ood_csv(result, 30.0, tmp_path / "aligned.csv")
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["wave.mp4", "wave_ood.png", "aligned.png", "aligned.csv"], umask_027), modes
