"""The command line: the README's commands render playable videos and say nothing but their own
lines, ``info`` describes an avatar from its files alone, help text is plain."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from ram_avatar.cli import build_parser, main, script_main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "avatars" / "dancer-rt256"


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
    code = main(
        [
            "demo",
            "--out",
            str(tmp_path / "x.mp4"),
            "--body-template",
            "smplx",
            "--body-model-path",
            str(tmp_path / "nowhere"),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "smpl-x.is.tue.mpg.de" in error and "Traceback" not in error
    assert not (tmp_path / "x.mp4").exists()


def test_readme_main_command_animates_the_bundled_example_quietly(tmp_path):
    """``ram-avatar animate examples/avatars/dancer-rt256 examples/motions/... out.mp4``: no
    download, no training; the avatar appears on a white background. Its own process (third-party
    libraries print when they first load): stdout holds only its result lines, stderr only its
    progress bar and its one-time notices (Anny's cache, compiling), no third-party noise."""
    out = tmp_path / "wave.mp4"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ram_avatar.cli",
            "--threads",
            "1",
            "animate",
            str(EXAMPLE),
            str(ROOT / "examples" / "motions" / "wave_hello.bvh"),
            str(out),
            "--max-frames",
            "4",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    video = iio.imread(out, plugin="pyav")
    assert video.shape == (4, 256, 256, 3)
    person = (video.min(-1) < 200).mean()
    assert 0.02 < person < 0.6  # a figure, not an empty or a filled frame
    assert [line.split(":")[0] for line in run.stdout.splitlines()] == [
        "MDA",
        f"wrote {out} and {out.with_name('wave_ood.png')}",
    ]
    for line in filter(str.strip, re.split(r"[\r\n]+", run.stderr)):
        assert line.startswith(("animating dancer-rt256:", "ram-avatar: ")), line


def test_help_text_is_plain():
    """No reST markup (``code``, :func:`x`) from docstrings in any command's help."""

    def helps(parser: argparse.ArgumentParser):
        yield parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from helps(sub)

    from ram_avatar.mda import train_prior
    from ram_avatar.mda.cli import add_prior_train_args

    texts = list(helps(build_parser()))
    with pytest.raises(SystemExit):  # a ``python -m`` script's help: its module docstring
        script_main("ram_avatar.mda.train_prior", train_prior.__doc__, add_prior_train_args, ["--help"])
    assert len(texts) > 10 and "``" in train_prior.__doc__
    assert not [text for text in texts if re.search(r"``|:[a-z]+:`", text)]


def test_info_reads_the_folder_without_torch_the_template_or_the_networks():
    """``ram-avatar info``: from avatar.json, the JSON beside the networks and the safetensors
    headers; torch is never imported (so nothing is built or loaded)."""
    code = (
        f"import sys, ram_avatar.cli as cli; code = cli.main(['info', {str(EXAMPLE)!r}]); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (
        run.stdout.startswith("dancer-rt256: RamAvatar (4.18 M parameters), 256x256 px at 30 fps") and run.stderr == ""
    )


def test_info_json_matches_the_loaded_avatar_and_reads_hub_ids(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    from ram_avatar.pipelines import RamAvatarPipeline

    assert main(["info", str(EXAMPLE), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    loaded = RamAvatarPipeline.from_pretrained(EXAMPLE, device="cpu").describe()
    assert info.keys() == loaded.keys()
    assert {k: v for k, v in info.items() if k != "config"} == {k: v for k, v in loaded.items() if k != "config"}
    assert info["config"].items() <= loaded["config"].items()  # loaded: the class's defaults too

    commit = "0123456789abcdef0123456789abcdef01234567"  # the same folder in an offline Hub cache
    shutil.copytree(EXAMPLE, tmp_path / "hub" / "models--someone--dancer" / "snapshots" / commit)
    (tmp_path / "hub" / "models--someone--dancer" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--dancer" / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["info", "someone/dancer", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == info
