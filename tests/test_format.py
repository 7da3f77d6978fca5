"""The avatar folder format: ``model_index.json`` names each part's library and class (diffusers'
convention) and loading goes through one registry, which refuses any other class; folders saved
before it existed still load and render the same; the public streaming API renders what
``stream`` does."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_fixture import TINY

from ram_avatar import __version__, registry
from ram_avatar.demo import wave_motion
from ram_avatar.models import BaselineUNet, PoseVAE, RamAvatar, SubjectPoseDecoder
from ram_avatar.models.pose_decoder import fingerprint
from ram_avatar.motion import Motion
from ram_avatar.pipelines import AvatarFormatError, Framing, RamAvatarPipeline
from ram_avatar.pipelines.folder import describe_avatar

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "avatars" / "dancer-rt256"
BASELINE = {
    k: TINY[k]
    for k in (
        "texture_size",
        "texture_channels",
        "texture_levels",
        "face_code_channels",
        "map_hidden",
        "map_channels",
        "widths",
    )
}


def tiny_pipeline(network: torch.nn.Module, mda: bool = True) -> RamAvatarPipeline:
    """A whole avatar around untrained tiny parts (no training): ``network`` and, with ``mda``, a
    pose prior and a decoder paired with it."""
    torch.manual_seed(0)
    prior = decoder = None
    if mda:
        prior = PoseVAE(latent_dim=8, hidden_dim=32)
        decoder = SubjectPoseDecoder(latent_dim=8, hidden_dim=32, prior_fingerprint=fingerprint(prior))
    face_rig = torch.randn(478, 3) * 0.05 + torch.tensor([0.0, 0.05, 0.1])
    return RamAvatarPipeline(
        network,
        "anny",
        torch.full((6,), 0.5),
        Framing(60.0, (0.5, 0.5), 2.5),
        30.0,
        (48, 48),
        face_rig=face_rig,
        decoder=decoder,
        prior=prior,
        name="tiny",
        source={"video": "tiny.mp4", "frames": 16, "synthetic": True},
        device="cpu",
    )


@pytest.fixture(scope="module")
def motion() -> Motion:
    return Motion(wave_motion(10), fps=30.0, name="wave", source="ram_avatar.demo")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, anny_template) -> Path:
    torch.manual_seed(1)
    return tiny_pipeline(RamAvatar(**TINY)).save_pretrained(tmp_path_factory.mktemp("format") / "tiny")


def render(pipe: RamAvatarPipeline, motion: Motion) -> np.ndarray:
    return pipe(motion, mda_strength=0.7, progress=False).frames


def test_model_index_names_each_part_in_diffusers_convention(saved, tmp_path):
    index = json.loads((saved / "model_index.json").read_text())
    assert index == {
        "_class_name": "RamAvatarPipeline",
        "_ram_avatar_version": __version__,
        "avatar": ["ram_avatar", "RamAvatar"],
        "pose_decoder": ["ram_avatar", "SubjectPoseDecoder"],
        "pose_prior": ["ram_avatar", "PoseVAE"],
    }
    assert (saved / "avatar.json").is_file()  # the avatar's own manifest stays beside it
    without = tiny_pipeline(RamAvatar(**TINY), mda=False).save_pretrained(tmp_path / "no-mda")
    index = json.loads((without / "model_index.json").read_text())
    assert index["pose_decoder"] == index["pose_prior"] == [None, None]  # diffusers' absent optional part
    loaded = RamAvatarPipeline.from_pretrained(without, device="cpu")
    assert not loaded.has_mda and describe_avatar(without)["mda"] is False


def test_a_folder_in_the_old_layout_loads_and_renders_the_same(saved, motion, tmp_path):
    """A folder saved before model_index.json existed (the same folder without it) loads the same
    parts and renders the same frames as with the manifest."""
    old = tmp_path / "old"
    shutil.copytree(saved, old)
    (old / "model_index.json").unlink()
    new_pipe = RamAvatarPipeline.from_pretrained(saved, device="cpu")
    old_pipe = RamAvatarPipeline.from_pretrained(old, device="cpu")
    for part in ("avatar", "decoder", "prior"):
        assert type(getattr(old_pipe, part)) is type(getattr(new_pipe, part))
    np.testing.assert_array_equal(render(old_pipe, motion), render(new_pipe, motion))
    assert describe_avatar(old) == describe_avatar(saved)
    # saving it again writes the manifest
    assert (old_pipe.save_pretrained(tmp_path / "resaved") / "model_index.json").is_file()


def test_the_bundled_example_loads_unchanged(anny_template):
    """The example avatar (no model_index.json) loads its three parts, and loading writes nothing."""
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in EXAMPLE.rglob("*") if p.is_file()}
    pipe = RamAvatarPipeline.from_pretrained(EXAMPLE, device="cpu")
    assert type(pipe.avatar) is RamAvatar and type(pipe.decoder) is SubjectPoseDecoder and type(pipe.prior) is PoseVAE
    frames = pipe(Motion(wave_motion(2), fps=30.0, name="wave", source="ram_avatar.demo"), progress=False).frames
    assert frames.shape == (2, 256, 256, 3) and frames.std() > 1.0
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in EXAMPLE.rglob("*") if p.is_file()} == before


def test_a_baseline_avatar_loads_as_baseline_through_the_manifest(motion, tmp_path, monkeypatch, anny_template):
    """An avatar whose network is the plain U-Net of `ram-avatar train --baseline` saves as such,
    loads as such (it loaded as a RamAvatar, and failed, before) and renders what it rendered,
    one chunk after the other or two at once (it has no temporal features to hand on)."""
    import ram_avatar.pipelines.streaming as streaming

    torch.manual_seed(2)
    pipe = tiny_pipeline(BaselineUNet(**BASELINE), mda=False)
    folder = pipe.save_pretrained(tmp_path / "baseline")
    assert json.loads((folder / "model_index.json").read_text())["avatar"] == ["ram_avatar", "BaselineUNet"]
    loaded = RamAvatarPipeline.from_pretrained(folder, device="cpu")
    assert type(loaded.avatar) is BaselineUNet and describe_avatar(folder)["network"] == "BaselineUNet"
    monkeypatch.setattr(streaming, "stream_workers", lambda device: 1)
    one = np.stack([f.image for f in pipe.stream(motion, chunk=4, progress=False)])
    monkeypatch.setattr(streaming, "stream_workers", lambda device: 2)
    two = np.stack([f.image for f in loaded.stream(motion, chunk=4, progress=False)])
    assert np.abs(one.astype(int) - two.astype(int)).max() <= 1  # the workers' threads round differently


def test_a_bare_network_folder_loads_as_the_class_its_training_recorded(tmp_path):
    """`ram-avatar train`'s OUT_DIR/avatar (no model_index.json): the class comes from the registry,
    under the name the training recorded; any other name is refused."""
    from ram_avatar.pipelines.format import load_network

    BaselineUNet(**BASELINE).save_pretrained(tmp_path / "avatar")
    (tmp_path / "avatar" / "metrics.json").write_text(json.dumps({"model": "BaselineUNet"}))
    network, extras = load_network(tmp_path / "avatar")
    assert type(network) is BaselineUNet and set(extras) >= {"metrics.json"}
    (tmp_path / "avatar" / "metrics.json").write_text(json.dumps({"model": "Sequential"}))
    with pytest.raises(registry.UnknownComponentError, match="ram_avatar.Sequential is not a class ram-avatar loads"):
        load_network(tmp_path / "avatar")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"avatar": ["ram_avatar_attack", "Payload"]}, "'avatar' is ram_avatar_attack.Payload, not a class ram-avatar"),
        ({"avatar": ["ram_avatar", "PoseVAE"]}, "'avatar' is ram_avatar.PoseVAE, not a class ram-avatar loads as"),
        ({"avatar": "RamAvatar"}, "'avatar' must be \\[library, class\\] or \\[null, null\\]"),
        ({"avatar": [None, None]}, "names no 'avatar' network"),
        ({"pose_prior": [None, None]}, "names only one of pose_decoder and pose_prior"),
        ({"hair": ["ram_avatar", "RamAvatar"]}, "names a part 'hair' this ram-avatar does not know"),
        ({"_class_name": "StableDiffusionPipeline"}, '"_class_name": "RamAvatarPipeline"'),
    ],
)
def test_the_registry_refuses_any_other_class(saved, tmp_path, change, message):
    """model_index.json may name only registered classes, each for its own part: anything else is
    a one-line error naming the file, and no module it names is imported."""
    folder = tmp_path / "avatar"
    shutil.copytree(saved, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, **change}))
    with pytest.raises(AvatarFormatError, match=f"^model_index.json:? .*{message}"):
        RamAvatarPipeline.from_pretrained(folder, device="cpu")
    with pytest.raises(AvatarFormatError, match="^model_index.json"):
        describe_avatar(folder)  # `ram-avatar info` reads it too
    assert "ram_avatar_attack" not in sys.modules


def test_a_registered_renderer_loads_with_no_edit_to_the_loader(motion, tmp_path, monkeypatch, anny_template):
    """A new renderer class, once registered, saves its name and loads back as itself; before,
    saving it is refused (the folder could not load again)."""

    class TintedUNet(BaselineUNet):
        """An alternative renderer: the baseline with its colours halved."""

        def forward(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = super().forward(maps)
            return {**out, "rgb": out["rgb"] * 0.5}

    monkeypatch.setattr(registry, "_CLASSES", {role: dict(classes) for role, classes in registry._CLASSES.items()})
    torch.manual_seed(3)
    pipe = tiny_pipeline(TintedUNet(**BASELINE), mda=False)
    with pytest.raises(registry.UnknownComponentError, match="TintedUNet is not registered as avatar"):
        pipe.save_pretrained(tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    registry.register("avatar", TintedUNet, library="my_renderers")
    folder = pipe.save_pretrained(tmp_path / "tinted")
    assert json.loads((folder / "model_index.json").read_text())["avatar"] == ["my_renderers", "TintedUNet"]
    loaded = RamAvatarPipeline.from_pretrained(folder, device="cpu")
    assert type(loaded.avatar) is TintedUNet
    np.testing.assert_array_equal(render(loaded, motion), render(pipe, motion))


def test_a_streamer_renders_frame_by_frame_what_stream_renders(saved, motion, monkeypatch):
    """The public streaming API (what live driving uses): MDA and drawing one frame at a time,
    carrying the MDA latent and the temporal features, give the frames and the MDA log of
    ``stream`` (to batching's float rounding)."""
    import ram_avatar.pipelines.streaming as streaming

    monkeypatch.setattr(streaming, "stream_workers", lambda device: 1)
    pipe = RamAvatarPipeline.from_pretrained(saved, device="cpu")
    log = {}
    streamed = [f.image for f in pipe.stream(motion, 0.7, chunk=4, progress=False, mda_log=log)]
    driving = pipe.load_driving(motion)
    streamer = pipe.streamer(driving)
    frames, ood = [], []
    for i in range(driving.pose.batch_size):
        pose, mda = streamer.align(driving, 0.7, slice(i, i + 1))
        (frame,) = streamer.draw(driving, pose, mda, slice(i, i + 1))
        assert frame.index == i and frame.ood_after == mda["ood_after"][0]
        frames.append(frame.image)
        ood.append(mda["ood_after"][0])
    assert np.abs(np.stack(frames).astype(int) - np.stack(streamed).astype(int)).max() <= 1
    np.testing.assert_allclose(ood, log["ood_after"], rtol=1e-5)
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        streamer.align(driving, 1.5)


def test_live_driving_uses_only_the_public_streaming_api():
    """pipelines/live.py renders through ``pipe.streamer`` (and ``Streamer.align`` / ``draw``),
    not the pipeline's private chunk functions."""
    source = (Path(__file__).resolve().parents[1] / "ram_avatar" / "pipelines" / "live.py").read_text()
    assert "pipe.streamer(" in source
    assert not re.findall(r"pipe\._\w+|_StreamState|_align_chunk|_prepare_chunk|_draw_chunk", source)
