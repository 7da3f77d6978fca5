"""Avatar training: the loop learns, held-out frames stay out, resume is exact, the saved avatar
loads (local folder and Hub cache, offline) and renders identically, pushing uploads the right files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pipeline_fixture
import pytest
import torch

from ram_avatar.body.layout import SmplxPose
from ram_avatar.data import CameraTrack, SubjectData, TemplateInfo, load_subject, write_subject
from ram_avatar.render import Camera, render_maps

N, SIZE = 12, 48
# The pipeline tests' tiny RamAvatar / BaselineUNet and fast settings (a step takes a fraction of
# a second on one core), here with a 2-level texture pyramid and VGG at 32^2.
TINY = {**pipeline_fixture.TINY, "texture_levels": 2}
FAST = {**pipeline_fixture.FAST, "perceptual_size": 32}
# VGG16 costs most of a step on a CPU: only the finished run (``trained``) uses the perceptual terms.


def synthetic_subject(template) -> SubjectData:  # noqa: ANN001
    """The template waving an arm, coloured by its canonical coordinates (a learnable look)."""
    pose = SmplxPose.zeros(N)
    angle = torch.linspace(-1.2, 0.2, N)
    pose.body_pose[:, 15, 2] = angle  # left shoulder: the arm rises frame by frame
    pose.body_pose[:, 16, 2] = 1.2
    with torch.no_grad():
        body = template(pose)
        camera = Camera.framing(body.vertices[:1], image_size=(SIZE, SIZE))
        camera = Camera(camera.K.expand(N, 3, 3), camera.R.expand(N, 3, 3), camera.t.expand(N, 3), (SIZE, SIZE))
        maps = render_maps(body.vertices, template.faces, template.uvs, template.uv_faces, template.canonical, camera)
        pixels, _ = camera.project(body.joints[:, 20:22])  # wrists: hands as a small keypoint fan
    frames = ((maps["canonical"] * 0.5 + 0.5) * maps["mask"][..., None] * 255).round().to(torch.uint8).numpy()
    masks = (maps["mask"].to(torch.uint8) * 255).numpy()
    hands = []
    for side in range(2):
        fan = pixels[:, side, None] + torch.linspace(-2, 2, 21)[None, :, None]
        hands.append(torch.cat([fan, torch.ones(N, 21, 1)], -1).numpy())
    return SubjectData(
        frames=frames,
        masks=masks,
        pose=pose,
        shape=np.full(6, 0.5, np.float32),
        expression=np.zeros((N, 52), np.float32),
        camera=CameraTrack(
            camera.K.numpy(), camera.R.numpy(), camera.t.numpy(), np.tile([0, 0, SIZE, SIZE], (N, 1)).astype(np.float32)
        ),
        keypoints={
            "body": np.zeros((N, 33, 3), np.float32),
            "left_hand": hands[0],
            "right_hand": hands[1],
            "face": np.zeros((N, 478, 3), np.float32),
        },
        template=TemplateInfo("anny", "anny-phenotype-6", "anny-arkit-52"),
        keypoint_layouts={"body": "mediapipe-pose-33", "hand": "mediapipe-hand-21", "face": "mediapipe-face-478"},
        fps=30.0,
        source_video="synthetic.mp4",
        source_size=(SIZE, SIZE),
        frame_indices=list(range(N)),
    )


@pytest.fixture(scope="module")
def subject_dir(tmp_path_factory, anny_template) -> Path:
    return write_subject(tmp_path_factory.mktemp("subject") / "wave", synthetic_subject(anny_template))


def config(**changes):  # noqa: ANN201
    from ram_avatar.training import TrainConfig

    return TrainConfig.from_dict({**FAST, "model_overrides": TINY, **changes})


@pytest.fixture(scope="module")
def trained(subject_dir, tmp_path_factory) -> Path:
    """A short finished run with every loss term: the paper's (``--paper-losses``)."""
    from ram_avatar.training import train

    out = tmp_path_factory.mktemp("run")
    train(subject_dir, out, config(steps=6, perceptual=1.0, hand_perceptual=1.0, gan=0.01), progress=False)
    return out


def test_held_out_frames_are_never_trained_on(subject_dir, tmp_path):
    from ram_avatar.training import Trainer

    trainer = Trainer(subject_dir, tmp_path / "run", config(steps=1), progress=False)
    held_out = set(trainer.held_out)
    assert held_out == {3, 7, 11}
    assert not held_out & set(trainer.train_set.centres)
    # Neither as centres nor as the discriminator's neighbour images: every triplet next to a
    # held-out frame is flagged and its neighbour slots hold the centre frame itself.
    for i in range(len(trainer.train_set)):
        item = trainer.train_set[i]
        t = int(item["index"])
        if {t - 1, t + 1} & held_out or t in (0, N - 1):
            assert not item["triplet_valid"]
            torch.testing.assert_close(item["previous"], item["image"])
        else:
            assert item["triplet_valid"]
    assert {int(trainer.held_out_set[i]["index"]) for i in range(len(trainer.held_out_set))} == held_out
    sampled = {i for step in range(50) for i in trainer.loader.batch_sampler.batch(step)}
    assert {trainer.train_set.centres[i] for i in sampled} <= set(trainer.train_frames)


def test_cached_maps_match_prepare_inputs(subject_dir, tmp_path, anny_template):
    from ram_avatar.models import RamAvatar
    from ram_avatar.training import TripletDataset, build_map_cache

    subject = load_subject(subject_dir)
    model = RamAvatar(**TINY)
    cache = build_map_cache(
        subject,
        anny_template,
        tmp_path,
        expand_distance=model.expand_distance,
        attention_downsample=model.attention_downsample,
        expanded=True,
        progress=False,
    )
    assert (
        build_map_cache(
            subject,
            anny_template,
            tmp_path,
            expand_distance=model.expand_distance,
            attention_downsample=model.attention_downsample,
            expanded=True,
            progress=False,
        )
        == cache
    )
    item = TripletDataset(subject, cache, [5], [4, 5, 6])[0]
    pose = SmplxPose.from_numpy({k: v[4:6] for k, v in subject.pose.to_numpy().items()})
    camera = Camera(
        *(torch.from_numpy(a[4:6]) for a in (subject.camera.K, subject.camera.R, subject.camera.t)), (SIZE, SIZE)
    )
    full = model.prepare_inputs(anny_template, pose, camera, shape=torch.from_numpy(subject.shape)[None])
    torch.testing.assert_close(item["maps"]["uv"], full["uv"][1])
    torch.testing.assert_close(item["maps"]["uv_previous"], full["uv"][0])
    assert torch.equal(item["maps"]["mask_expanded"], full["mask_expanded"][1])
    detected = torch.from_numpy(np.stack([subject.keypoints["left_hand"][5], subject.keypoints["right_hand"][5]]))
    torch.testing.assert_close(item["maps"]["hand_keypoints"], detected)


def test_camera_jitter_sees_the_frame_through_a_moved_camera(subject_dir, tmp_path, anny_template):
    """Jittered maps are the body rasterized through A @ K, and the frames and keypoints move with
    them: the GT mask still lies on the body's; with no jitter nothing changes."""
    from ram_avatar.models import RamAvatar
    from ram_avatar.training import TripletDataset
    from ram_avatar.training.augment import CameraJitter, jitter_matrices, warp_points
    from ram_avatar.training.held_out import model_map_cache

    subject = load_subject(subject_dir)
    cache = model_map_cache(RamAvatar(**TINY), subject, anny_template, tmp_path, progress=False)
    settings = json.loads((cache / "settings.json").read_text())
    frames = list(range(N))
    items = TripletDataset(subject, cache, frames, frames)
    batch = torch.utils.data.default_collate([items[i] for i in range(N)])

    still = CameraJitter(subject, anny_template, settings, zoom=0.0, shift=0.0)(batch, seed=0, step=0)
    for key, value in batch["maps"].items():
        torch.testing.assert_close(still["maps"][key], value, atol=1e-5, rtol=0)
    torch.testing.assert_close(still["image"], batch["image"])

    def overlap(body: torch.Tensor, mask: torch.Tensor) -> float:  # (B, H, W) bool, (B, 1, H, W)
        gt = mask[:, 0] > 0.5
        return ((body & gt).sum() / (body | gt).sum()).item()

    jitter = CameraJitter(subject, anny_template, settings, zoom=0.3, shift=0.15, roll=20)
    shifted = jitter.view(batch, torch.tensor([[1.0, 0, 3], [0, 1, -5], [0, 0, 1]]).expand(N, 3, 3))
    assert torch.equal(shifted["maps"]["mask"], shifted["mask"][:, 0] > 0.5)  # whole pixels: exact
    moved = jitter(batch, seed=0, step=3)
    A = jitter_matrices(N, (SIZE, SIZE), 0.3, 0.15, seed=0, step=3, roll=20)
    assert not torch.allclose(A, torch.eye(3).expand(N, 3, 3), atol=0.05)
    # Zoomed, a bilinearly resampled 48^2 mask loses thin parts: the overlap is high, not exact.
    assert overlap(moved["maps"]["mask"], moved["mask"]) > 0.85
    assert overlap(moved["maps"]["mask"], batch["mask"]) < 0.5  # the body did move
    assert not torch.equal(moved["maps"]["uv_previous"], batch["maps"]["uv_previous"])
    # 2D keypoints move as the camera's projection does: project through A @ K.
    K = torch.from_numpy(subject.camera.K)
    point = torch.tensor([[0.1, -0.2, 3.0]]).expand(N, 1, 3)  # camera-space points, z ahead
    project = lambda K: (K @ point.transpose(1, 2)).transpose(1, 2)  # noqa: E731
    pixels = lambda h: h[..., :2] / h[..., 2:]  # noqa: E731
    torch.testing.assert_close(warp_points(pixels(project(K)), A), pixels(project(A @ K)))
    torch.testing.assert_close(
        moved["maps"]["hand_keypoints"], warp_points(batch["maps"]["hand_keypoints"], A), atol=1e-4, rtol=0
    )


def test_warp_images_moves_a_dot_where_warp_points_does():
    from ram_avatar.training.augment import warp_images, warp_points

    image = torch.zeros(1, 1, 40, 40)
    image[0, 0, 10, 20] = 1  # pixel centre (u, v) = (20.5, 10.5)
    cos, sin = 1.5 * math.cos(0.4), 1.5 * math.sin(0.4)  # a zoom of 1.5, a roll and a shift
    A = torch.tensor([[[cos, -sin, 2.0], [sin, cos, -9.0], [0.0, 0.0, 1.0]]])
    warped = warp_images(image, A)[0, 0]
    v, u = torch.meshgrid(torch.arange(40) + 0.5, torch.arange(40) + 0.5, indexing="ij")
    centre = torch.stack([(warped * u).sum(), (warped * v).sum()]) / warped.sum()
    # A half-pixel slip between the two conventions would put it (1.5 - 1) / 2 = 0.25 px off.
    torch.testing.assert_close(centre, warp_points(torch.tensor([[20.5, 10.5]]), A)[0], atol=0.05, rtol=0)


def test_discriminator_labels_real_triplets_as_real():
    """The D loss is low when real (three GT frames) scores high and fake (prediction inside) low."""
    from ram_avatar.training.objectives import discriminator_loss, generator_gan_loss

    weight = torch.ones(2)
    high, low = torch.full((2, 1, 3, 3), 4.0), torch.full((2, 1, 3, 3), -4.0)
    assert discriminator_loss(high, low, weight) < 0.05 < discriminator_loss(low, high, weight)
    assert generator_gan_loss(high, weight) < 0.05 < generator_gan_loss(low, weight)
    # Items whose triplet is not valid contribute nothing.
    assert discriminator_loss(low, high, torch.zeros(2)) == 0


def test_discriminator_step_separates_real_from_fake(subject_dir, tmp_path):
    """A few steps on real data: the discriminator scores GT triplets above predicted ones."""
    from ram_avatar.training import Trainer
    from ram_avatar.training.train_avatar import to_device, train_step

    blank = {**TINY, "colour_skip": False}  # a generator that starts far from the GT (not from its colours)
    trainer = Trainer(subject_dir, tmp_path / "run", config(steps=30, gan=1.0, model_overrides=blank), progress=False)
    valid = [i for i in range(len(trainer.train_set)) if trainer.train_set[i]["triplet_valid"]]
    batch = to_device(torch.utils.data.default_collate([trainer.train_set[i] for i in valid[:2]]), torch.device("cpu"))
    for _ in range(8):
        logs = train_step(batch, trainer.parts, trainer.config, trainer.accelerator)
    assert logs["d/real_logit"] > logs["d/fake_logit"]


def test_loss_goes_down_on_a_fixed_batch(subject_dir, tmp_path):
    from ram_avatar.training import Trainer
    from ram_avatar.training.train_avatar import to_device, train_step

    blank = {**TINY, "colour_skip": False}  # starting from the subject's colours, there is little left to learn
    trainer = Trainer(subject_dir, tmp_path / "run", config(steps=100, model_overrides=blank), progress=False)
    batch = to_device(next(iter(trainer.loader)), torch.device("cpu"))
    losses = [train_step(batch, trainer.parts, trainer.config, trainer.accelerator)["loss/l1"] for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_resume_continues_exactly(subject_dir, tmp_path):
    """4 steps straight == 2 steps, stop, resume, 2 steps: same losses, same weights, same EMA."""
    from ram_avatar.training import Trainer, train

    cache = tmp_path / "cache"
    # With the GAN, so that the discriminator, its optimiser and its schedule resume too.
    # With camera jitter, whose cameras are a function of the step like the batches.
    jitter = dict(camera_zoom=0.2, camera_shift=0.1, camera_roll=10)
    straight = Trainer(
        subject_dir, tmp_path / "a", config(steps=4, gan=0.01, **jitter), progress=False, cache_dir=cache
    )
    straight.run()
    half = config(steps=4, gan=0.01, checkpoint_every=2, eval_every=2, **jitter)
    Trainer(subject_dir, tmp_path / "b", half, progress=False, cache_dir=cache).run(until_step=2)
    with pytest.raises(FileExistsError, match="--resume"):
        train(subject_dir, tmp_path / "b", half, progress=False, cache_dir=cache)
    stale = tmp_path / "b" / "checkpoints" / ".last.writing-3"  # what a run killed while saving leaves
    (stale / "pytorch_model").mkdir(parents=True)
    resumed = Trainer(subject_dir, tmp_path / "b", half, resume=True, progress=False, cache_dir=cache)
    assert resumed.state["step"] == 2
    assert not stale.exists(), "--resume removes a half-written checkpoint"
    resumed.run()
    assert resumed.state["step"] == 4
    assert resumed.state["last_losses"]["loss/total"] == pytest.approx(
        straight.state["last_losses"]["loss/total"], rel=1e-5
    )
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    generator = lambda t: t.accelerator.unwrap_model(t.parts["generator"]).state_dict()  # noqa: E731
    for a, b in zip(generator(straight).values(), generator(resumed).values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert resumed.parts["sched_g"].get_last_lr() == straight.parts["sched_g"].get_last_lr()
    with pytest.raises(ValueError, match="different settings"):
        Trainer(subject_dir, tmp_path / "b", config(steps=8, lr=0.5), resume=True, progress=False, cache_dir=cache)
    # A run saved before ``alpha_loss`` existed trained with L1, the default: it still resumes.
    saved = tmp_path / "b" / "train_config.json"
    values = json.loads(saved.read_text())
    del values["alpha_loss"]
    saved.write_text(json.dumps(values))
    longer = dict(steps=6, gan=0.01, checkpoint_every=2, eval_every=2, **jitter)
    with pytest.raises(ValueError, match="alpha_loss"):
        Trainer(
            subject_dir,
            tmp_path / "b",
            config(**longer, alpha_loss="mse"),
            resume=True,
            progress=False,
            cache_dir=cache,
        )
    old = config(**longer)
    assert Trainer(subject_dir, tmp_path / "b", old, resume=True, progress=False, cache_dir=cache).config == old


def test_run_writes_checkpoints_preview_metrics_and_card(trained):
    for name in (
        "train_config.json",
        "preview.png",
        "metrics.json",
        "checkpoints/last/ema.safetensors",
        "checkpoints/best/trainer_state.json",
        "avatar/model.safetensors",
        "avatar/config.json",
        "avatar/README.md",
    ):
        assert (trained / name).is_file(), name
    assert any((trained / "logs").rglob("events.out.tfevents.*"))
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["held_out_frames"] == [3, 7, 11]
    assert 0 < metrics["held_out"]["psnr"] < 60 and 0 < metrics["held_out"]["ssim"] <= 1
    card = (trained / "avatar" / "README.md").read_text()
    assert "library_name: ram-avatar" in card and "consent" in card.lower() and "deep-fake" in card
    held = metrics["held_out"]
    assert (
        f"| PSNR (dB, higher is better) | {held['psnr']:.4g} | {held['psnr_masked']:.4g} |" in card and "rt-256" in card
    )
    assert not list((trained / "avatar").glob("*.bin")) and not list((trained / "avatar").glob("*.pt*"))
    preview = iio.imread(trained / "avatar" / "preview.png")  # held-out frames: GT | avatar, on white
    assert preview.shape == (SIZE, 2 * 3 * SIZE, 3) and (preview[0, 0] == 255).all()


def _render(model, subject_dir: Path, trained: Path) -> torch.Tensor:  # noqa: ANN001
    from ram_avatar.training import TripletDataset

    cache = next((trained / "cache").glob("maps-*"))
    dataset = TripletDataset(load_subject(subject_dir), cache, [3, 7], None)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    with torch.no_grad():
        return model.eval()(batch["maps"])["rgb"]


def test_saved_avatar_loads_from_folder_and_offline_hub_cache(trained, subject_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from ram_avatar.models import RamAvatar

    ema = load_file(trained / "checkpoints" / "last" / "ema.safetensors")
    reference = RamAvatar.from_config_name("rt-256", **TINY)  # as the trainer builds it
    reference.load_state_dict(ema)
    expected = _render(reference, subject_dir, trained)
    local = RamAvatar.from_pretrained(trained / "avatar")
    torch.testing.assert_close(_render(local, subject_dir, trained), expected, rtol=0, atol=0)

    # The Hub cache layout, offline: models--org--name/snapshots/<commit>/ + refs/main.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--wave-avatar"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors", "README.md"):
        (snapshot / name).write_bytes((trained / "avatar" / name).read_bytes())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub = RamAvatar.from_pretrained("someone/wave-avatar")
    torch.testing.assert_close(_render(hub, subject_dir, trained), expected, rtol=0, atol=0)


def test_push_uploads_weights_config_and_card_only(trained, monkeypatch):
    import huggingface_hub
    from huggingface_hub import RepoUrl

    from ram_avatar.training import push_avatar

    calls = {}

    def create_repo(self, repo_id, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls["create"] = (repo_id, kwargs)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
        from huggingface_hub.utils import filter_repo_objects

        files = sorted(p.name for p in Path(folder_path).iterdir())
        calls["upload"] = (repo_id, sorted(filter_repo_objects(files, allow_patterns=allow_patterns)))
        return "commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    (trained / "avatar" / "stray.pkl").write_bytes(b"not uploaded")
    try:
        assert push_avatar(trained / "avatar", "someone/wave-avatar", private=True) == "commit"
    finally:
        (trained / "avatar" / "stray.pkl").unlink()
    assert calls["create"] == ("someone/wave-avatar", {"private": True, "exist_ok": True, "repo_type": "model"})
    repo_id, uploaded = calls["upload"]
    assert repo_id == "someone/wave-avatar"
    assert uploaded == ["README.md", "config.json", "metrics.json", "model.safetensors", "preview.png"]


def test_cli_train_runs_and_reports(subject_dir, tmp_path, capsys):
    from ram_avatar.training.train_avatar import main

    out = tmp_path / "cli"
    args = [str(subject_dir), str(out), *pipeline_fixture.TINY_TRAIN_OPTIONS]
    assert main(args) == 0
    assert "held-out: psnr" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    assert main([str(subject_dir), str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_each_avatar_size_trains_with_its_recipe():
    """rt-256: the CPU recipe (L1 + alpha); the GPU sizes and --paper-losses: the paper's losses."""
    import argparse

    from ram_avatar.training.cli import add_train_arguments, config_from_args
    from ram_avatar.training.train_avatar import PAPER_LOSSES, TrainConfig

    cpu = TrainConfig.for_config("rt-256")
    assert cpu.perceptual == cpu.hand_perceptual == cpu.gan == 0 and cpu.alpha > 1 and cpu.alpha_loss == "l1"
    with pytest.raises(ValueError, match="alpha_loss must be one of"):
        TrainConfig.for_config("rt-256", alpha_loss="huber")
    assert cpu.camera_zoom == cpu.camera_shift == cpu.camera_roll == 0  # jitter: only when asked for
    for bad in ({"camera_zoom": -0.1}, {"camera_shift": 0.5}, {"camera_roll": 200}):
        with pytest.raises(ValueError, match="camera_zoom must be >= 0"):
            TrainConfig.for_config("rt-256", **bad)
    for name in ("hq-512", "paper-1024"):
        paper = TrainConfig.for_config(name, steps=10)
        assert (paper.config, paper.steps) == (name, 10)
        assert all(getattr(paper, key) == value for key, value in PAPER_LOSSES.items())
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    parse = lambda *extra: config_from_args(parser.parse_args(["subject", "out", *extra]))  # noqa: E731
    assert parse() == cpu
    assert parse("--paper-losses").gan == PAPER_LOSSES["gan"]
    assert parse("--paper-losses", "--set", "gan=0").gan == 0  # --set has the last word
    assert parse("--set", "config=paper-1024").perceptual == PAPER_LOSSES["perceptual"]
    assert parse("--config", "paper-1024", "--set", "perceptual=0").perceptual == 0
    with pytest.raises(ValueError, match="unknown --config"):
        parse("--config", "tiny")


def test_hand_boxes_and_crops_cut_out_the_hand():
    from ram_avatar.training.objectives import crop, hand_boxes

    keypoints = torch.zeros(1, 2, 21, 3)
    keypoints[0, 0, :, 0] = torch.linspace(30, 40, 21)  # left hand: x 30..40, y 22..28
    keypoints[0, 0, :, 1] = torch.linspace(22, 28, 21)
    keypoints[0, 0, :, 2] = 1.0  # the right hand is not detected
    boxes, valid = hand_boxes(keypoints, (64, 64), margin=0.0, min_side=0.0)
    assert valid.tolist() == [[True, False]]
    x0, y0, x1, y1 = boxes[0, 0].tolist()
    assert [x0, y0, x1, y1] == pytest.approx([30, 20, 40, 30])  # square, around the points' centre
    image = torch.zeros(1, 3, 64, 64)
    image[..., 10:50, 25:45] = 1.0  # covers the left hand's box
    crops = crop(image, boxes, 8)
    assert crops.shape == (2, 3, 8, 8)
    assert crops[0].min() == 1.0


def test_lr_schedule_ends_with_the_time_budget():
    from ram_avatar.schedule import cosine_factor

    assert cosine_factor(150, 4000, 100, 0.1) > 0.99  # by steps alone, 150 of 4000 is still at the peak
    assert cosine_factor(150, 4000, 100, 0.1, time_progress=1.0) == pytest.approx(0.1)  # the minutes are spent
    assert cosine_factor(150, 4000, 100, 0.1, time_progress=0.5) == pytest.approx(0.55)
    assert cosine_factor(3999, 4000, 100, 0.1, time_progress=0.1) == pytest.approx(0.1, abs=1e-4)  # steps end first
    assert cosine_factor(9, 4000, 100, 0.1, time_progress=0.9) == pytest.approx(0.1)  # warm-up counts steps
    assert [cosine_factor(s, 10, 2, 0.2) for s in (0, 1, 2, 6, 10)] == pytest.approx([0.5, 1.0, 1.0, 0.6, 0.2])


def test_a_time_limited_run_decays_its_learning_rate_within_the_budget(subject_dir, tmp_path, monkeypatch):
    """``minutes`` ends a 1000-step run after a few steps: its learning rate has decayed by then."""
    from types import SimpleNamespace

    from ram_avatar.training import Trainer, train_avatar

    clock = iter(range(0, 10**6, 4))  # seconds: every reading of the run's clock is 4 s later
    monkeypatch.setattr(train_avatar, "time", SimpleNamespace(monotonic=lambda: float(next(clock))))
    trainer = Trainer(subject_dir, tmp_path / "run", config(steps=1000, warmup_steps=1), minutes=1.0, progress=False)
    trainer.run()
    assert 2 < trainer.state["step"] < 20
    lr = trainer.parts["sched_g"].get_last_lr()[0]
    assert lr < 0.35 * trainer.config.lr, lr  # by steps alone it would still be ~ the peak


def test_avatar_matches_the_ground_truth_on_any_background(anny_template, tmp_path):
    """A dark subject (on black, its alpha would be free: the old ghost) trained on random
    backgrounds renders like the ground truth on white, black and grey."""
    from ram_avatar.training import Trainer
    from ram_avatar.training.held_out import render_frames

    subject = synthetic_subject(anny_template)
    subject.frames = (subject.frames * 0.2).astype(np.uint8)  # dark clothes
    folder = write_subject(tmp_path / "dark", subject)
    # The synthetic person's outline is the template's exactly: no edge spread to unlearn in 30 steps.
    overrides = {**TINY, "colour_skip": True, "edge_spread": 0}
    trainer = Trainer(folder, tmp_path / "run", config(steps=30, model_overrides=overrides), progress=False)
    trainer.run()
    for background in (0.0, 0.5, 1.0):
        pred, gt, mask = render_frames(trainer.ema, trainer.held_out_set, torch.device("cpu"), background)
        body = torch.nn.functional.max_pool2d(mask, 5, 1, 2) > 0  # the person and a margin around it
        error = (pred - gt).abs().mean(1, keepdim=True)[body]
        assert error.mean() < 0.04, (background, error.mean())  # 0.04: ~10 levels of 255 on average
