"""Motion Distribution Align: pose prior, subject decoder, alignment, training loops, CLI.

All poses are synthetic. The generic "motion" swings arms from down to overhead and bends
elbows and knees; the "subject" only ever holds its arms down (swaying a little), so a driving
pose with the arms overhead is plainly outside the subject's distribution.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ram_avatar.body.layout import SmplxPose
from ram_avatar.mda import DEFAULT_STRENGTH
from ram_avatar.mda.align import OOD_RANGE, align
from ram_avatar.mda.augment import mirror_body_pose, mirror_pose
from ram_avatar.mda.losses import body_joint_positions, hinge_limit_loss
from ram_avatar.mda.train import train_prior, train_subject_decoder
from ram_avatar.models.pose_decoder import SubjectPoseDecoder, fingerprint
from ram_avatar.models.pose_vae import PoseVAE
from ram_avatar.rotations import (
    aa_to_6d,
    aa_to_matrix,
    angle_between_aa,
    matrix_to_aa,
    sixd_to_aa,
)

L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_KNEE, R_KNEE = 15, 16, 17, 18, 3, 4  # body-joint indices
TINY_PRIOR = {"latent_dim": 8, "hidden_dim": 64, "num_layers": 2, "dropout": 0.0}
FAST = {"position_weight": 0.0, "progress": False, "checkpoint_every": 10_000}


def arms_pose(raise_left: torch.Tensor, raise_right: torch.Tensor, elbow: torch.Tensor | None = None) -> torch.Tensor:
    """Body poses (T, 21, 3): arms raised by the given angles (rad; -1.4 = down, +1.4 = overhead)."""
    body = torch.zeros(len(raise_left), 21, 3)
    body[:, L_SHOULDER, 2] = raise_left  # the left arm lies along +X: +z rotation lifts it
    body[:, R_SHOULDER, 2] = -raise_right
    if elbow is not None:
        body[:, L_ELBOW, 1], body[:, R_ELBOW, 1] = -elbow, elbow
    return body


def as_pose(body: torch.Tensor) -> SmplxPose:
    pose = SmplxPose.zeros(len(body))
    pose.body_pose = body
    return pose


def generic_motion(frames: int = 1500, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)

    def u(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(frames, generator=g)

    body = arms_pose(u(-1.4, 1.4), u(-1.4, 1.4), u(0.0, 1.5))
    body[:, L_KNEE, 0], body[:, R_KNEE, 0] = u(0.0, 1.2), u(0.0, 1.2)
    return body + 0.03 * torch.randn(body.shape, generator=g)


def subject_motion(frames: int = 240) -> torch.Tensor:
    """Arms down, swaying slowly: a smooth clip (consecutive frames are close)."""
    t = torch.arange(frames) / 30.0
    return arms_pose(-1.2 + 0.15 * torch.sin(2.0 * t), -1.2 + 0.15 * torch.cos(1.3 * t), 0.2 + 0.1 * torch.sin(t))


def arm_height(body: torch.Tensor) -> torch.Tensor:
    """Height (y) of the unit left upper-arm direction, (T,): -1 hanging, +1 straight up."""
    return (aa_to_matrix(body[:, L_SHOULDER]) @ torch.tensor([1.0, 0.0, 0.0]))[:, 1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny prior on generic motion and a subject decoder on the first 200 subject frames."""
    root = tmp_path_factory.mktemp("mda")
    torch.manual_seed(0)
    prior = train_prior(
        [as_pose(generic_motion())],
        root / "prior",
        steps=400,
        val_fraction=0.1,
        model_kwargs=TINY_PRIOR,
        lr=3e-3,
        **FAST,
    )
    subject = subject_motion()
    decoder = train_subject_decoder(
        as_pose(subject[:200]),
        root / "prior",
        root / "decoder",
        steps=400,
        fps=30.0,
        val_fraction=0.0,
        model_kwargs={"hidden_dim": 64},
        lr=3e-3,
        **FAST,
    )
    return {"root": root, "prior": prior, "decoder": decoder, "heldout": subject[200:]}


def test_rotation_conversions_round_trip():
    g = torch.Generator().manual_seed(0)
    axis = torch.nn.functional.normalize(torch.randn(50, 3, generator=g), dim=-1)
    rotvec = axis * 3.1 * torch.rand(50, 1, generator=g)  # angles below pi: axis-angle is unique
    assert torch.allclose(sixd_to_aa(aa_to_6d(rotvec)), rotvec, atol=1e-4)
    assert torch.allclose(matrix_to_aa(aa_to_matrix(rotvec)), rotvec, atol=1e-4)
    quarter = torch.tensor([[0.0, math.pi / 2, 0.0]])
    assert torch.allclose(angle_between_aa(quarter, torch.zeros(1, 3)), torch.tensor([90.0]))


def test_mirroring_twice_is_identity_and_mirrors_the_body():
    pose = SmplxPose.from_full(torch.randn(4, 55, 3) * 0.5, torch.randn(4, 3))
    twice = mirror_pose(mirror_pose(pose))
    assert torch.allclose(twice.full(), pose.full()) and torch.allclose(twice.transl, pose.transl)
    assert torch.equal(mirror_body_pose(pose.body_pose), mirror_pose(pose).body_pose)
    # On a left/right-symmetric skeleton the mirrored pose's joints are the originals reflected
    # in x = 0, left and right swapped.
    half = torch.tensor(
        [
            [0.1, -0.1, 0],
            [0, 0.1, 0],
            [0.1, -0.5, 0],
            [0, 0.3, 0],
            [0.1, -0.9, 0],
            [0, 0.4, 0],
            [0.1, -1.0, 0.1],
            [0, 0.6, 0],
            [0.08, 0.55, 0],
            [0, 0.7, 0],
            [0.2, 0.55, 0],
            [0.45, 0.55, 0],
            [0.7, 0.55, 0],
            [0.9, 0.55, 0],
        ]
    )
    side = {1: 0, 4: 2, 7: 4, 10: 6, 13: 8, 16: 10, 18: 11, 20: 12}  # left joint -> row of `half`
    mid = {3: 1, 6: 3, 9: 5, 12: 7, 15: 9}
    rest = torch.zeros(22, 3)
    for joint, row in side.items():
        rest[joint] = half[row]
        rest[joint + 1] = half[row] * torch.tensor([-1.0, 1.0, 1.0])
    for joint, row in mid.items():
        rest[joint] = half[row]
    positions = body_joint_positions(aa_to_matrix(pose.body_pose), rest)
    mirrored = body_joint_positions(aa_to_matrix(mirror_pose(pose).body_pose), rest)
    swap = [0] + [j + 1 if j in side else j - 1 if j - 1 in side else j for j in range(1, 22)]
    assert torch.allclose(mirrored, positions[:, swap] * torch.tensor([-1.0, 1.0, 1.0]), atol=1e-5)


def test_hinge_limit_penalises_only_backward_knees_and_elbows():
    def loss(joint: int, axis: int, angle: float) -> float:
        body = torch.zeros(1, 21, 3)
        body[0, joint, axis] = angle
        return hinge_limit_loss(aa_to_matrix(body)).item()

    assert loss(L_KNEE, 0, 1.2) == 0 and loss(R_KNEE, 0, 1.2) == 0  # knees flex about +x
    assert loss(L_ELBOW, 1, -1.2) == 0 and loss(R_ELBOW, 1, 1.2) == 0  # elbows flex forward
    assert loss(L_KNEE, 0, -0.8) > 0.1 and loss(R_ELBOW, 1, -0.8) > 0.1 and loss(L_ELBOW, 1, 0.8) > 0.1


def test_model_shapes_and_bad_input():
    vae = PoseVAE(**TINY_PRIOR)
    mean, logvar = vae.encode(torch.zeros(5, 21, 3))
    assert mean.shape == logvar.shape == (5, 8)
    assert vae.decode(mean).shape == (5, 21, 3, 3) and vae.decode_aa(mean).shape == (5, 21, 3)
    assert vae(torch.zeros(5, 21, 3))["matrices"].shape == (5, 21, 3, 3)
    decoder = SubjectPoseDecoder(latent_dim=8, hidden_dim=32)
    assert decoder(mean, mean).shape == (5, 21, 3, 3) and decoder.ood_score(mean).shape == (5,)
    with pytest.raises(ValueError, match="21, 3"):
        vae.encode(torch.zeros(5, 63))


def test_training_reduces_error(trained):
    data = generic_motion(300, seed=1)  # unseen frames of the same distribution
    untrained = PoseVAE(**TINY_PRIOR).eval()
    before = angle_between_aa(untrained.reconstruct(data), data).mean().item()
    after = angle_between_aa(trained["prior"].model.reconstruct(data), data).mean().item()
    assert after < 0.5 * before, (before, after)
    metrics = json.loads((trained["root"] / "prior" / "metrics.json").read_text())
    assert metrics["heldout_frames"] == 150 and metrics["heldout_deg"] < 15


def test_save_load_round_trip_gives_identical_outputs(trained):
    root, prior, decoder = trained["root"], trained["prior"].model, trained["decoder"].model
    loaded_prior = PoseVAE.from_pretrained(root / "prior")
    loaded_decoder = SubjectPoseDecoder.from_pretrained(root / "decoder")
    body = generic_motion(20, seed=2)
    assert torch.equal(loaded_prior.encode(body)[0], prior.encode(body)[0])
    z = prior.encode(body)[0]
    assert torch.equal(loaded_decoder(z, z), decoder(z, z))
    assert torch.equal(loaded_decoder.ood_score(z), decoder.ood_score(z))  # buffers travel too
    assert loaded_decoder.fps == 30.0 and loaded_decoder.prior_fingerprint == fingerprint(loaded_prior)


def test_strength_zero_is_exact_identity(trained):
    driving = SmplxPose.from_full(torch.randn(12, 55, 3) * 0.4, torch.randn(12, 3))
    result = align(driving, trained["prior"].model, trained["decoder"].model, strength=0.0)
    for name in ("global_orient", "body_pose", "jaw_pose", "left_hand_pose", "right_hand_pose", "transl"):
        assert torch.equal(getattr(result.pose, name), getattr(driving, name))
    assert torch.equal(result.ood_after, result.ood_before) and result.change_deg.abs().max() == 0


def test_align_keeps_in_distribution_poses_and_pulls_arms_down(trained):
    prior, decoder = trained["prior"].model, trained["decoder"].model
    heldout = align(as_pose(trained["heldout"]), prior, decoder)
    assert heldout.change_deg.mean() < 3.0, heldout.change_deg.mean()
    assert heldout.ood_before.median() < 3.0

    t = torch.linspace(0, 1, 30)
    arms_up = arms_pose(1.2 + 0.1 * t, 1.2 + 0.1 * t, 0.2 * t)  # overhead: the subject never did that
    driving = SmplxPose.from_full(torch.randn(30, 55, 3) * 0.3, torch.randn(30, 3))
    driving.body_pose = arms_up
    result = align(driving, prior, decoder, strength=1.0)
    assert result.ood_before.min() > 5 * heldout.ood_before.median()
    assert (result.ood_after < 0.3 * result.ood_before).all()
    assert arm_height(result.pose.body_pose).max() < arm_height(arms_up).min() - 0.5  # arms came down
    # Only the body joints change: root, translation, hands and face are the driving motion's.
    for name in ("global_orient", "transl", "jaw_pose", "leye_pose", "left_hand_pose", "right_hand_pose"):
        assert torch.equal(getattr(result.pose, name), getattr(driving, name))

    half = align(driving, prior, decoder, strength=0.5)  # per-joint slerp: half the angle
    assert torch.allclose(half.change_deg, 0.5 * result.change_deg, rtol=0.02, atol=0.1)


def test_only_frames_far_out_of_the_subjects_distribution_are_aligned(trained):
    # The left arm rises from the subject's (down) to overhead: the first frames are the
    # subject's own poses, the last far out of them, some in between.
    prior, decoder = trained["prior"].model, trained["decoder"].model
    raised = torch.linspace(-1.2, 1.3, 40)
    driving = as_pose(arms_pose(raised, torch.full((40,), -1.2), torch.full((40,), 0.2)))
    result = align(driving, prior, decoder, strength=1.0)
    full = align(driving, prior, decoder, strength=1.0, ood_range=None)  # every frame fully aligned
    low, high = OOD_RANGE
    kept, pulled = result.ood_before <= low, result.ood_before >= high
    partly = ~kept & ~pulled
    assert kept.sum() >= 5 and partly.sum() >= 2 and pulled.sum() >= 5, result.ood_before
    assert torch.equal(result.pose.body_pose[kept], driving.body_pose[kept])  # bit for bit
    torch.testing.assert_close(result.pose.body_pose[pulled], full.pose.body_pose[pulled])
    weight = (result.ood_before[partly] - low) / (high - low)  # per-joint slerp by the frame's weight
    torch.testing.assert_close(result.change_deg[partly], weight * full.change_deg[partly], atol=0.05, rtol=0.01)
    assert (result.ood_after[pulled] < 0.5 * result.ood_before[pulled]).all()
    assert arm_height(result.pose.body_pose[pulled]).max() < arm_height(subject_motion()).max() + 0.1  # down again
    half = align(driving, prior, decoder, strength=0.5)
    torch.testing.assert_close(half.change_deg, 0.5 * result.change_deg, atol=0.05, rtol=0.01)


def test_the_default_strength_is_the_same_everywhere():
    from ram_avatar.cli import build_parser
    from ram_avatar.pipelines import RamAvatarPipeline
    from ram_avatar.pipelines.live import LiveSession

    parse = build_parser().parse_args
    defaults = {
        "align": inspect.signature(align).parameters["strength"].default,
        "pipeline": inspect.signature(RamAvatarPipeline.__call__).parameters["mda_strength"].default,
        "stream": inspect.signature(RamAvatarPipeline.stream).parameters["mda_strength"].default,
        "live": inspect.signature(LiveSession).parameters["mda_strength"].default,
        "animate": parse(["animate", "avatar", "motion.bvh", "out.mp4"]).mda_strength,
        "align apply": parse(["align", "apply", "m.bvh", "o.npz", "--decoder", "d", "--prior", "p"]).strength,
    }
    assert defaults == dict.fromkeys(defaults, DEFAULT_STRENGTH)


def test_the_apps_mda_sliders_start_at_the_default_strength(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    import app

    sliders = [c["props"] for c in app.build_app().config["components"] if c["type"] == "slider"]
    mda = [props["value"] for props in sliders if "MDA" in props.get("label", "")]
    assert mda == [DEFAULT_STRENGTH, DEFAULT_STRENGTH]


def test_align_refuses_a_decoder_of_another_prior(trained):
    other = PoseVAE(**TINY_PRIOR)
    with pytest.raises(ValueError, match="another pose prior"):
        align(as_pose(trained["heldout"]), other, trained["decoder"].model)
    with pytest.raises(ValueError, match="strength"):
        align(as_pose(trained["heldout"]), trained["prior"].model, trained["decoder"].model, strength=1.5)


def test_resume_continues_from_the_saved_step(tmp_path, monkeypatch):
    import ram_avatar.mda.train as train_module

    data = [as_pose(generic_motion(200))]
    kwargs = {
        "model_kwargs": TINY_PRIOR,
        "val_fraction": 0.0,
        "position_weight": 0.0,
        "progress": False,
        "steps": 8,
        "checkpoint_every": 4,
    }
    straight = train_prior(data, tmp_path / "straight", **kwargs)

    save = train_module._save_checkpoint

    def save_then_crash(accelerator, out_dir, state):
        save(accelerator, out_dir, state)
        raise KeyboardInterrupt  # killed right after the step-4 checkpoint

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_prior(data, tmp_path / "resumed", **kwargs)
    monkeypatch.undo()
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 4 and not (tmp_path / "resumed" / "model.safetensors").exists()
    with pytest.raises(FileExistsError, match="resume"):
        train_prior(data, tmp_path / "resumed", **kwargs)
    stale = tmp_path / "resumed" / ".checkpoint.writing-8"  # what a run killed while saving leaves
    (stale / "pytorch_model").mkdir(parents=True)
    resumed = train_prior(data, tmp_path / "resumed", resume=True, **kwargs)
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "trainer_state.json").read_text())["step"] == 8
    assert not [p.name for p in (tmp_path / "resumed").glob(".*")]  # the stale copy is gone, nothing is left
    # Same batches, noise, learning rates and optimiser state as the uninterrupted run.
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_mda_training_follows_the_one_learning_rate_schedule(tmp_path):
    """The prior's and decoder's loop scales its rate by ``ram_avatar.schedule.cosine_factor``: a
    linear warm-up over the first tenth, the peak right after it, then a cosine down towards
    ``FINAL_LR_RATIO`` at the last step."""
    import ram_avatar.mda.train as train_module
    from ram_avatar.schedule import cosine_factor

    class Square(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, target: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": ((self.weight - target) ** 2).sum()}

    steps, lr, rates = 40, 1e-3, []
    accelerator, objective = train_module._accelerator(), Square()
    objective, optimizer = accelerator.prepare(objective, torch.optim.SGD(objective.parameters(), lr=lr))

    def batch() -> tuple[torch.Tensor]:
        rates.append(optimizer.param_groups[0]["lr"])  # set by the loop before each step
        return (torch.ones(1),)

    train_module._loop(
        accelerator,
        objective,
        optimizer,
        batch,
        start=0,
        steps=steps,
        lr=lr,
        seed=0,
        out_dir=tmp_path,
        checkpoint_every=10_000,
        state={},
        desc="",
        progress=False,
    )
    warmup = steps // 10
    final = train_module.FINAL_LR_RATIO
    assert rates == pytest.approx([lr * cosine_factor(s, steps, warmup, final) for s in range(steps)])
    assert rates[:warmup] == pytest.approx([lr * (s + 1) / warmup for s in range(warmup)]) and rates[warmup] == lr
    assert all(a > b for a, b in zip(rates[warmup:], rates[warmup + 1 :]))
    assert final * lr < rates[-1] < 1.1 * final * lr  # one step short of it


def test_a_saved_model_comes_whole_with_its_weights_last(tmp_path, monkeypatch):
    """The trained model's files are renamed into its folder (which also holds the checkpoint) the
    weights last, so a ``model.safetensors`` there always has its config (``create`` reuses a
    decoder that has one); nothing else is left behind."""
    import os

    import ram_avatar.mda.train as train_module

    moved, replace = [], os.replace

    def recorded(source: str, target: str) -> None:
        moved.append(Path(target).name)
        replace(source, target)

    monkeypatch.setattr(os, "replace", recorded)
    model = PoseVAE(**TINY_PRIOR)
    train_module._save_model(model, tmp_path, {"steps": 1})
    monkeypatch.undo()
    assert moved[-2:] == ["model.safetensors", "metrics.json"] and "config.json" in moved
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(moved)  # no hidden staging left
    loaded = PoseVAE.from_pretrained(str(tmp_path)).state_dict()
    assert all(torch.equal(value, loaded[key]) for key, value in model.state_dict().items())


def test_cli_align_apply_writes_motion_plot_and_table(trained, tmp_path):
    from ram_avatar.mda.cli import add_commands
    from ram_avatar.motion import Motion, load_motion, save_motion

    driving = as_pose(arms_pose(torch.full((15,), 1.2), torch.full((15,), 1.2)))
    save_motion(Motion(driving, 30.0, "arms up", "test"), tmp_path / "up.npz")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    root = trained["root"]
    args = parser.parse_args(
        [
            "align",
            "apply",
            str(tmp_path / "up.npz"),
            str(tmp_path / "out.npz"),
            "--decoder",
            str(root / "decoder"),
            "--prior",
            str(root / "prior"),
            "--device",
            "cpu",
        ]
    )
    assert args.run(args) == 0
    aligned = load_motion(tmp_path / "out.npz")
    assert aligned.num_frames == 15 and arm_height(aligned.pose.body_pose).max() < 0.5
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert rows[0] == "frame,time_s,ood_before,ood_after,change_deg" and len(rows) == 16
    before, after = np.array([[float(v) for v in row.split(",")[2:4]] for row in rows[1:]]).T
    assert (after < before).all()


def test_cli_errors_name_the_fix(tmp_path):
    from ram_avatar.mda.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    (tmp_path / "empty").mkdir()
    args = parser.parse_args(
        ["align", "train", str(tmp_path / "empty"), str(tmp_path / "out"), "--prior", str(tmp_path)]
    )
    with pytest.raises(FileNotFoundError, match="motion-prior train"):
        args.run(args)
    with pytest.raises(ValueError, match="at least 10"):
        train_subject_decoder(as_pose(subject_motion(5)), PoseVAE(**TINY_PRIOR), tmp_path / "d", steps=1, **FAST)
