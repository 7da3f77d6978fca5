"""The README's main command: ``ram-avatar demo`` renders the driven template to a playable video."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from ram_avatar.cli import main


def test_demo_writes_a_playable_video_showing_the_body(tmp_path, anny_template, capsys):
    out = tmp_path / "demo" / "wave.mp4"
    assert main(["demo", "--out", str(out), "--frames", "6", "--size", "96"]) == 0
    video = iio.imread(out, plugin="pyav")
    assert video.shape == (6, 96, 96, 3)
    # The body covers a good part of the frame (the background is white) and moves between frames.
    body = (video < 230).any(-1)
    assert 0.05 < body.mean() < 0.6
    assert (np.abs(video[0].astype(int) - video[3].astype(int)) > 40).any(-1).mean() > 0.005
    assert out.with_suffix(".png").is_file()
    assert not list(out.parent.glob("*.partial*"))  # the temporary file was renamed into place
    assert "wrote" in capsys.readouterr().out


def test_missing_smplx_model_is_a_clear_error_not_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAM_AVATAR_SMPLX_DIR", raising=False)
    code = main(["demo", "--out", str(tmp_path / "x.mp4"), "--body-template", "smplx",
                 "--body-model-path", str(tmp_path / "nowhere")])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert "smpl-x.is.tue.mpg.de" in error and "Traceback" not in error
    assert not (tmp_path / "x.mp4").exists()


def test_readme_main_command_animates_the_bundled_example(tmp_path):
    """``ram-avatar animate examples/avatars/dancer-rt256 examples/motions/... out.mp4``: no
    download, no training; the avatar appears on a white background."""
    root = Path(__file__).resolve().parents[1] / "examples"
    out = tmp_path / "wave.mp4"
    code = main(["animate", str(root / "avatars" / "dancer-rt256"), str(root / "motions" / "wave_hello.bvh"),
                 str(out), "--max-frames", "4"])  # fmt: skip
    assert code == 0
    video = iio.imread(out, plugin="pyav")
    assert video.shape == (4, 256, 256, 3)
    person = (video.min(-1) < 200).mean()
    assert 0.02 < person < 0.6  # a figure, not an empty or a filled frame
