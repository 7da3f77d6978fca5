"""One error path for the CLI: every expected failure is one line ``ram-avatar CMD: error: ...``
naming the file and what to do, exit code 2, no traceback (unless ``--debug``); outputs are
checked before any long work starts."""

from __future__ import annotations

import argparse
import errno
import os
from pathlib import Path

import pytest

from ram_avatar.cli import main, run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "avatars" / "dancer-rt256"
MOTION = ROOT / "examples" / "motions" / "wave_hello.bvh"


def one_line_error(capsys: pytest.CaptureFixture, command: str, *names: str) -> str:
    """The stderr of a failed command, checked to be one error line naming each of ``names``."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"ram-avatar {command}: error: "), err
    for name in names:
        assert name in lines[0], (name, err)
    return lines[0]


@pytest.fixture
def no_long_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if an avatar, a template or a model starts loading (the output check must come first)."""
    from ram_avatar import body
    from ram_avatar.evaluation import evaluate
    from ram_avatar.mda import load as mda_load
    from ram_avatar.mda import train as mda_train
    from ram_avatar.pipelines import RamAvatarPipeline
    from ram_avatar.training import train_avatar

    def fail(*args, **kwargs):
        pytest.fail("long work started before the output path was checked")

    monkeypatch.setattr(RamAvatarPipeline, "from_pretrained", fail)
    monkeypatch.setattr(body, "load_template", fail)
    monkeypatch.setattr(evaluate, "evaluate_avatar", fail)
    monkeypatch.setattr(train_avatar, "train", fail)
    monkeypatch.setattr(mda_train, "train_prior", fail)
    monkeypatch.setattr(mda_load, "load_prior", fail)


def test_track_into_an_existing_dataset_says_how_to_go_on(tmp_path, capsys):
    out = tmp_path / "subject"
    out.mkdir()
    (out / "meta.json").write_text("{}")
    assert main(["track", str(MOTION), str(out)]) == 2  # the clip exists: the output is what is wrong
    one_line_error(capsys, "track", str(out), "--overwrite")


def test_animate_into_a_folder_is_refused_before_loading_the_avatar(tmp_path, capsys, no_long_work):
    out = tmp_path / "out.mp4"
    out.mkdir()
    assert main(["animate", str(EXAMPLE), str(MOTION), str(out)]) == 2
    one_line_error(capsys, "animate", str(out), "folder")
    assert not [p for p in tmp_path.iterdir() if p != out] and not list(out.iterdir())


def test_output_under_a_file_is_refused_before_any_work(tmp_path, capsys, no_long_work):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    cases = [
        ("animate", [str(EXAMPLE), str(MOTION), str(blocker / "out.mp4")]),
        ("demo", ["--out", str(blocker / "demo.mp4")]),
        ("eval", [str(EXAMPLE), str(tmp_path), str(blocker / "eval")]),
        ("train", [str(tmp_path), str(blocker / "run")]),
        ("create", [str(MOTION), str(blocker / "avatar")]),
        ("align", ["apply", str(MOTION), str(blocker / "aligned.npz"), "--decoder", "d", "--prior", "p"]),
        ("motion-prior", ["train", str(MOTION), str(blocker / "prior")]),
    ]
    for command, args in cases:
        assert main([command, *args]) == 2, command
        one_line_error(capsys, command, str(blocker), "not a folder")
    assert sorted(tmp_path.iterdir()) == [blocker]


def test_an_output_folder_that_is_a_file_is_refused(tmp_path, capsys, no_long_work):
    out = tmp_path / "run"
    out.write_text("")
    assert main(["eval", str(EXAMPLE), str(tmp_path), str(out)]) == 2
    one_line_error(capsys, "eval", str(out), "is a file")


def test_a_read_only_output_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch, no_long_work):
    # Tests may run as root, for whom no folder is read-only: the folder is reported so.
    folder = tmp_path / "readonly"
    folder.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != folder and access(path, mode, **kw))
    assert main(["animate", str(EXAMPLE), str(MOTION), str(folder / "out.mp4")]) == 2
    one_line_error(capsys, "animate", str(folder / "out.mp4"), str(folder), "not writable")


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (errno.ENOSPC, "no space left on the device holding out/clip.mp4"),
        (errno.EFBIG, "out/clip.mp4 is over the file size limit"),
        (errno.EACCES, "permission denied for out/clip.mp4"),
        (errno.EROFS, "out/clip.mp4 is on a read-only file system"),
        (errno.EISDIR, "out/clip.mp4 is a folder where a file is needed"),
        (errno.ENOTDIR, "part of out/clip.mp4 is a file where a folder is needed"),
        (errno.EEXIST, "out/clip.mp4 already exists"),
    ],
)
def test_each_io_failure_is_one_line_naming_the_file(code, says, capsys):
    """Whatever writing meets (a full disk, permissions, a folder in the way) prints one line."""

    def fails(args: argparse.Namespace) -> int:
        raise OSError(code, os.strerror(code), "out/clip.mp4")

    assert run(argparse.Namespace(run=fails), "ram-avatar animate") == 2
    assert says in one_line_error(capsys, "animate")


def test_a_damaged_optimizer_file_on_resume_is_one_line_naming_it(tmp_path, capsys, anny_template):
    import pipeline_fixture

    from ram_avatar.cli import build_parser
    from ram_avatar.data import write_subject
    from ram_avatar.training import Trainer
    from ram_avatar.training.cli import config_from_args

    subject = write_subject(tmp_path / "subject", pipeline_fixture.synthetic_subject(anny_template))
    out = tmp_path / "run"
    args = ["train", str(subject), str(out), *pipeline_fixture.TINY_TRAIN_OPTIONS]
    trainer = Trainer(subject, out, config_from_args(build_parser().parse_args(args)), progress=False)
    trainer._save_checkpoint(is_best=False)  # a checkpoint at step 0: no training needed
    optimizer = out / "checkpoints" / "last" / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[:100])  # cut short, as by a full disk
    assert main([*args, "--resume"]) == 2
    one_line_error(capsys, "train", str(optimizer), "damaged", "best")


def test_ctrl_c_is_one_line_with_exit_code_130(tmp_path, capsys, monkeypatch):
    from ram_avatar.tracking import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "detect_clip", interrupted)
    assert main(["track", str(MOTION), str(tmp_path / "subject")]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "ram-avatar track: interrupted", err
    assert list(tmp_path.iterdir()) == []  # nothing finished: nothing kept


def test_tracebacks_only_with_debug_and_for_bugs(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.mp4"
    out.mkdir()
    command = ["animate", str(EXAMPLE), str(MOTION), str(out)]
    assert main(["--debug", *command]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("ram-avatar animate: error: ")
    monkeypatch.setenv("RAM_AVATAR_DEBUG", "1")
    assert main(command) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.delenv("RAM_AVATAR_DEBUG")

    def bug(args: argparse.Namespace) -> int:
        return {}["missing"]  # a KeyError is a bug, not a user's mistake: it keeps its traceback

    with pytest.raises(KeyError):
        run(argparse.Namespace(run=bug), "ram-avatar animate")
