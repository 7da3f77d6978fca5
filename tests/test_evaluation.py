"""ram-avatar eval: held-out rendering, metrics equal to the metrics module's, files written, OOD."""

from __future__ import annotations

import json
import os
import shutil
import stat
from fractions import Fraction
from pathlib import Path

import av
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from pipeline_fixture import SIZE, N, make_tiny_avatar, wave_motion_file

from ram_avatar import metrics
from ram_avatar.data import load_subject
from ram_avatar.evaluation import evaluate_avatar, temporal_stability
from ram_avatar.models import RamAvatar, face_points_from_keypoints


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, anny_template) -> Path:
    """A tiny avatar trained 4 steps (not a real avatar: for checking the evaluation's plumbing)."""
    root = tmp_path_factory.mktemp("eval")
    make_tiny_avatar(root, anny_template)
    return root


@pytest.fixture(scope="module")
def evaluated(tiny):
    return evaluate_avatar(tiny / "run", tiny / "subject", tiny / "eval", progress=False, device="cpu")


def test_held_out_frames_are_the_trainers_split(evaluated, tiny):
    trained = json.loads((tiny / "run" / "metrics.json").read_text())
    assert evaluated.frames == trained["held_out_frames"] == list(range(3, N, 4))


def test_renders_held_out_frames_as_the_model_does_on_its_own_inputs(evaluated, tiny, anny_template):
    subject = load_subject(tiny / "subject")
    model = RamAvatar.from_pretrained(str(tiny / "run" / "avatar")).eval()
    for i, t in enumerate(evaluated.frames):
        frame = slice(t, t + 1)
        pose, previous = subject.pose[frame], subject.pose[t - 1 : t]
        camera = _camera(subject, frame)
        face = face_points_from_keypoints(
            torch.from_numpy(subject.keypoints["face"][frame]), torch.from_numpy(subject.keypoints["face_mesh"][frame])
        )
        with torch.no_grad():
            maps = model.prepare_inputs(
                anny_template,
                pose,
                camera,
                shape=torch.from_numpy(subject.shape)[None],
                expression=torch.from_numpy(subject.expression[frame]),
                face_points=face,
                previous_pose=previous,
                previous_expression=torch.from_numpy(subject.expression[t - 1 : t]),
            )
            out = model(maps)
        expected = out["rgb"] * out["alpha"]  # trained on a black background
        torch.testing.assert_close(evaluated.pred[i : i + 1], expected.clamp(0, 1), atol=2e-5, rtol=0)
        gt = torch.from_numpy(np.asarray(subject.frames[t])).permute(2, 0, 1).float() / 255
        mask = torch.from_numpy(np.asarray(subject.masks[t])).float() / 255
        torch.testing.assert_close(evaluated.gt[i], gt * mask, atol=1e-6, rtol=0)


def _camera(subject, frame):  # noqa: ANN001, ANN202
    from ram_avatar.render import Camera

    c = subject.camera
    return Camera(*(torch.from_numpy(np.asarray(a[frame], np.float32)) for a in (c.K, c.R, c.t)), subject.image_size)


def test_metrics_equal_the_metrics_module_on_the_rendered_frames(evaluated):
    report = json.loads((evaluated.out_dir / "metrics.json").read_text())
    expected = metrics.evaluate(evaluated.pred, evaluated.gt, None, ("psnr", "ssim", "lpips_alex", "tlpips"))
    for name, result in expected.items():
        assert report["metrics"][name] == result.to_dict()
    assert report["per_frame"]["psnr"] == pytest.approx(metrics.psnr(evaluated.pred, evaluated.gt).tolist())
    assert report["metrics"]["fid"]["value"] is None and "50" in report["metrics"]["fid"]["unavailable"]
    assert report["masked"] is False
    # Person-only numbers always come beside the whole-frame ones (whole frames flatter a blur).
    person = metrics.evaluate(evaluated.pred, evaluated.gt, evaluated.mask, ("psnr", "ssim", "lpips_alex"))
    for name, result in person.items():
        assert report["person_metrics"][name] == result.to_dict()
    assert report["person_metrics"]["psnr"]["value"] != pytest.approx(report["metrics"]["psnr"]["value"])


def test_writes_table_pictures_video_and_plot(evaluated):
    out = evaluated.out_dir
    table = (out / "metrics.md").read_text()
    assert "| metric | whole frame | person only |" in table and "| psnr |" in table
    pictures = sorted((out / "comparisons").glob("*.png"))
    assert [p.name for p in pictures] == [f"frame_{t:06d}.png" for t in evaluated.frames]
    image = iio.imread(pictures[0])
    assert image.shape == (SIZE, 3 * SIZE, 3)
    gt_tile = (evaluated.gt[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(image[:, :SIZE].astype(float) - gt_tile).max() <= 1  # GT | ours | error
    video = iio.imread(out / "comparison.mp4", plugin="pyav")
    assert video.shape[0] == len(evaluated.frames) and video.shape[2] == 3 * SIZE
    assert video_rate(out / "comparison.mp4") == Fraction(30, 4)  # every 4th frame of 30 fps, not rounded to 8
    assert iio.imread(out / "per_frame.png").shape[0] > 100
    assert not list(out.parent.glob(".eval.writing-*"))


def video_rate(path: Path) -> Fraction:
    with av.open(str(path)) as container:
        return container.streams.video[0].average_rate


@pytest.fixture
def umask_027():
    """Run with umask 027: outputs must be 0o640 (neither 0o600 nor a hard-coded 0o644)."""
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_an_evaluation_video_keeps_its_exact_frame_rate(tiny, tmp_path, umask_027):
    """A 50 fps subject evaluated on every 4th frame: comparison.mp4 plays at 12.5 fps (it was
    written at round(12.5) = 12), and like every output it gets the umask's mode."""
    subject = tmp_path / "subject-50fps"
    shutil.copytree(tiny / "subject", subject)
    meta = json.loads((subject / "meta.json").read_text())
    (subject / "meta.json").write_text(json.dumps({**meta, "fps": 50.0}))
    result = evaluate_avatar(tiny / "run", subject, tmp_path / "eval", progress=False, device="cpu")
    video = result.out_dir / "comparison.mp4"
    assert video_rate(video) == Fraction(25, 2)
    assert stat.S_IMODE(video.stat().st_mode) == umask_027


def test_evaluation_reproduces_the_trainers_held_out_numbers(evaluated, tiny):
    """Training's held-out evaluation and ``ram-avatar eval`` render through one renderer: the
    same avatar on the same frames gives the same numbers, whole frame and person only."""
    trained = json.loads((tiny / "run" / "metrics.json").read_text())["held_out"]
    report = json.loads((evaluated.out_dir / "metrics.json").read_text())
    for name in ("psnr", "ssim", "lpips_alex"):
        assert report["metrics"][name]["value"] == trained[name], name
        assert report["person_metrics"][name]["value"] == trained[f"{name}_masked"], name


def test_masked_metrics_use_the_person_mask(evaluated, tiny):
    masked = evaluate_avatar(
        tiny / "run" / "avatar", tiny / "subject", tiny / "eval-masked", masked=True, progress=False, device="cpu"
    )
    assert masked.metrics["psnr"]["value"] == pytest.approx(
        float(metrics.psnr(masked.pred, masked.gt, masked.mask).mean())
    )
    assert masked.metrics["psnr"]["value"] != pytest.approx(evaluated.metrics["psnr"]["value"])
    assert "masked" in (tiny / "eval-masked" / "metrics.md").read_text()


@pytest.mark.slow
def test_fid_is_computed_once_there_are_enough_frames(tiny, tmp_path):
    result = evaluate_avatar(
        tiny / "run", tiny / "subject", tmp_path / "fid", fid_min_frames=2, progress=False, device="cpu"
    )
    expected = metrics.evaluate(result.pred, result.gt, None, ("fid",))["fid"].to_dict()
    assert result.metrics["fid"].keys() == expected.keys()  # a value, or unavailable when its weights are missing
    assert expected["value"] is None or result.metrics["fid"]["value"] == pytest.approx(expected["value"], rel=1e-6)


def test_ood_motion_reports_mda_scores_and_stability(tiny, tmp_path):
    motion = wave_motion_file(tmp_path / "wave.npz", frames=6)
    result = evaluate_avatar(
        tiny / "tiny", tiny / "subject", tmp_path / "ood", ood_motion=motion, progress=False, device="cpu"
    )
    ood = json.loads((tmp_path / "ood" / "metrics.json").read_text())["ood"]
    assert ood == result.ood and ood["frames"] == 6
    assert ood["ood_before"] > 0 and ood["ood_after"] > 0  # the tiny avatar has MDA
    assert ood["pixel_change"] > 0
    assert iio.imread(tmp_path / "ood" / "ood.mp4", plugin="pyav").shape[0] == 6
    assert ood["fps"] == 30.0 and video_rate(tmp_path / "ood" / "ood.mp4") == 30  # the motion's own rate


def test_temporal_stability_is_zero_for_a_still_sequence_and_grows_with_change():
    still = torch.full((3, 3, 32, 32), 0.5)
    assert temporal_stability(still)["pixel_change"] == 0
    moving = still.clone()
    moving[1] += 0.2
    assert temporal_stability(moving)["pixel_change"] == pytest.approx(0.2, abs=1e-6)


def test_errors_name_what_to_do(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="train one"):
        evaluate_avatar(tmp_path, tiny / "subject", tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="every-k"):
        evaluate_avatar(tiny / "run", tiny / "subject", tmp_path / "y", every_k=N + 1, progress=False, device="cpu")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        evaluate_avatar(tiny / "run", tiny / "subject", tmp_path / "notes", progress=False, device="cpu")


def test_cli_eval(tiny, tmp_path, capsys):
    import argparse

    from ram_avatar.evaluation.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(
        ["eval", str(tiny / "run"), str(tiny / "subject"), str(tmp_path / "cli"), "--every-k", "4", "--device", "cpu"]
    )
    assert args.run(args) == 0 and "held-out frames (every 4th)" in capsys.readouterr().out
    assert (tmp_path / "cli" / "metrics.md").is_file()
