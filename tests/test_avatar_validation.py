"""Avatar folders (which may come from any Hub repo) are checked before anything is allocated:
damaged safetensors files, out-of-range configs and manifests, configs that do not match their
weights, and avatars needing more memory than the limit are one clear line each, never a
traceback nor a huge allocation. Each folder here is the bundled example, copied, then damaged."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ram_avatar.limits import LimitError
from ram_avatar.pipelines.folder import AvatarFormatError, describe_avatar, read_manifest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "avatars" / "dancer-rt256"
WEIGHTS = [
    "avatar/model.safetensors",
    "pose_decoder/model.safetensors",
    "pose_prior/model.safetensors",
    "face_rig.safetensors",
]


@pytest.fixture
def dancer(tmp_path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "dancer"))


def load(folder: Path):
    from ram_avatar.pipelines import RamAvatarPipeline

    return RamAvatarPipeline.from_pretrained(folder, device="cpu")


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _header(data: bytes) -> tuple[int, dict]:
    (length,) = struct.unpack("<Q", data[:8])
    return length, json.loads(data[8 : 8 + length])


def _reshaped(data: bytes) -> bytes:
    """The first tensor's shape changed in the header, its length kept (padded with spaces)."""
    length, header = _header(data)
    header[next(name for name in header if name != "__metadata__")]["shape"] = [1]
    return data[:8] + json.dumps(header, separators=(",", ":")).encode().ljust(length) + data[8 + length :]


DAMAGE = {
    "truncated": (lambda data: data[: len(data) // 2], "truncated"),
    "header-cut": (lambda data: data[:28], "header claims"),
    "too-short": (lambda data: data[:5], "too short"),
    "huge-length": (lambda data: b"\xff" * 8 + data[8:], "header claims"),
    "header-not-json": (lambda data: data[:8] + b"!" * _header(data)[0] + data[8 + _header(data)[0] :], "valid JSON"),
    "shape-lies": (_reshaped, "do not match its shape"),
    "trailing-bytes": (lambda data: data + bytes(16), "data after its last tensor"),
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("weights", WEIGHTS)
def test_a_damaged_weights_file_is_one_clear_line(dancer, weights, damage):
    corrupt, why = DAMAGE[damage]
    path = dancer / weights
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(AvatarFormatError, match=f"^{weights} is damaged \\(.*{why}.*download the avatar") as error:
        load(dancer)
    assert "\n" not in str(error.value) and str(dancer.parent) not in str(error.value)  # one line, no server path


def test_info_and_the_cli_report_a_damaged_file_in_one_line(dancer, capsys):
    from ram_avatar.cli import main

    path = dancer / "avatar" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(AvatarFormatError, match="avatar/model.safetensors is damaged"):
        describe_avatar(dancer)
    assert main(["info", str(dancer)]) == 2
    err = capsys.readouterr().err
    assert "avatar/model.safetensors is damaged" in err and "Traceback" not in err


def test_a_weights_file_over_the_size_limit_is_refused(dancer, monkeypatch):
    monkeypatch.setenv("RAM_AVATAR_LIMIT_AVATAR_FILE_MB", "10")  # avatar/model.safetensors: 16 MB
    with pytest.raises(LimitError, match="avatar/model.safetensors.* is 15.9.*RAM_AVATAR_LIMIT_AVATAR_FILE_MB"):
        load(dancer)


@pytest.mark.parametrize(
    ("file", "changes", "message"),
    [
        (
            "avatar/config.json",
            {"texture_channels": -3},
            "'texture_channels' must be an integer between 1 and 4096, got -3",
        ),
        ("avatar/config.json", {"widths": [16, 0, 32]}, "'widths' must be a list of 1 to 10 integers"),
        ("avatar/config.json", {"widths": [16] * 11}, "'widths' must be a list of 1 to 10 integers"),
        ("avatar/config.json", {"style_dim": True}, "'style_dim' must be an integer .* got True"),
        ("avatar/config.json", {"texture_size": "256"}, "'texture_size' must be an integer .* got '256'"),
        ("avatar/config.json", {"attention_downsample": 2.5}, "'attention_downsample' must be an integer"),
        ("avatar/config.json", {"hand_map": 1}, "'hand_map' must be true or false"),
        ("avatar/config.json", {"texture_size": 2, "texture_levels": 5}, "describes no valid RamAvatar .*too small"),
        ("pose_prior/config.json", {"dropout": 2.0}, "'dropout' must be a number between 0 and 1"),
        ("pose_decoder/config.json", {"num_layers": 0}, "'num_layers' must be an integer between 1 and 64"),
        ("pose_decoder/config.json", {"prior": ["x"]}, "'prior' must be a text"),
    ],
    ids=[
        "negative",
        "zero-width",
        "eleven-levels",
        "bool",
        "text",
        "float",
        "int-for-bool",
        "levels",
        "dropout",
        "no-layers",
        "list-for-text",
    ],
)
def test_config_values_are_checked_by_type_and_range(dancer, file, changes, message):
    edit_json(dancer / file, **changes)
    with pytest.raises(AvatarFormatError, match=f"^{file}:? .*{message}"):
        load(dancer)


@pytest.mark.parametrize("text", ["[48, 48]", "{not json"], ids=["not-an-object", "not-json"])
def test_a_config_that_is_not_a_json_object(dancer, text):
    (dancer / "pose_prior" / "config.json").write_text(text)
    with pytest.raises(AvatarFormatError, match="^pose_prior/config.json (must hold a JSON object|is not valid JSON)"):
        load(dancer)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"image_size": [100000, 100000]}, LimitError, "'image_size'.* is 100000, but must be at most 2048"),
        ({"image_size": [-1, 256]}, AvatarFormatError, "'image_size' must be \\[height, width\\], two positive"),
        ({"image_size": "256"}, AvatarFormatError, "'image_size' must be"),
        ({"fps": 1e-300}, LimitError, "'fps'.* is 1e-300, but must be between 0.1 and 1000"),
        ({"fps": "30"}, AvatarFormatError, "'fps' must be a positive number"),
        ({"framing": {"focal": -1, "pelvis_uv": [0.5, 0.5], "pelvis_depth": 3}}, AvatarFormatError, "'framing.focal'"),
        ({"framing": {"focal": 400, "pelvis_uv": [0.5], "pelvis_depth": 3}}, AvatarFormatError, "'framing.pelvis_uv'"),
        ({"template": {"name": "anny", "shape": ["x"]}}, AvatarFormatError, "'template.shape' must be a list"),
        ({"version": "1"}, AvatarFormatError, "'version' must be an integer"),
    ],
    ids=[
        "image-size-100000",
        "negative-size",
        "size-text",
        "fps-tiny",
        "fps-text",
        "focal",
        "pelvis-uv",
        "shape",
        "version",
    ],
)
def test_avatar_json_values_are_checked(dancer, changes, error, message):
    edit_json(dancer / "avatar.json", **changes)
    with pytest.raises(error, match=f"dancer/avatar.json.*{message}"):
        load(dancer)


def test_weights_must_match_the_network_the_config_describes(dancer):
    edit_json(dancer / "avatar" / "config.json", texture_channels=32)
    with pytest.raises(
        AvatarFormatError,
        match=(
            r"avatar/model.safetensors does not match avatar/config.json: the config describes a \[.*32.*\] tensor "
            r"'.*', the file holds \[.*48.*\]; the two come from different models"
        ),
    ):
        load(dancer)
    edit_json(dancer / "avatar" / "config.json", texture_channels=48, hand_map=False)  # a part less: tensors left over
    with pytest.raises(AvatarFormatError, match="config describes no tensor 'hand.*', the file holds"):
        load(dancer)


def test_a_face_rig_of_another_shape_is_refused(dancer):
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"face_landmarks": np.zeros((10, 3), np.float32)}, str(dancer / "face_rig.safetensors"))
    with pytest.raises(AvatarFormatError, match=r"face_rig.safetensors must hold 'face_landmarks' of shape \[478, 3\]"):
        load(dancer)


def test_memory_estimate_refuses_an_avatar_over_the_limit(dancer, monkeypatch):
    from ram_avatar.pipelines.validate import check_avatar_folder

    needed = check_avatar_folder(dancer, read_manifest(dancer))
    assert 16e6 < needed < 1e9  # 16 MB of weights plus the activations of a 256^2 frame
    monkeypatch.setenv("RAM_AVATAR_LIMIT_AVATAR_MEMORY_GB", f"{needed / 2**30 * 0.9}")
    with pytest.raises(
        LimitError, match="^dancer-rt256, in GB: memory an avatar's .*RAM_AVATAR_LIMIT_AVATAR_MEMORY_GB"
    ):
        load(dancer)
    monkeypatch.setenv("RAM_AVATAR_LIMIT_AVATAR_MEMORY_GB", f"{needed / 2**30 * 1.1}")
    assert load(dancer).image_size == (256, 256)
    # a value that changes no weight but the attention's cost: full-size attention at 2048^2
    monkeypatch.delenv("RAM_AVATAR_LIMIT_AVATAR_MEMORY_GB")
    edit_json(dancer / "avatar" / "config.json", attention_downsample=1)
    edit_json(dancer / "avatar.json", image_size=[2048, 2048])
    with pytest.raises(LimitError, match="memory an avatar's network may need"):
        load(dancer)


def test_estimate_grows_with_the_frame_and_the_attention():
    from ram_avatar.models import RamAvatar, get_config
    from ram_avatar.models.hub import check_config
    from ram_avatar.pipelines.validate import frame_activation_bytes

    config = check_config(RamAvatar, get_config("rt-256"), "rt-256")
    small, large = frame_activation_bytes(config, (256, 256)), frame_activation_bytes(config, (512, 512))
    assert 3.5 * small < large + 3 * 64 * 2**20 < 4.5 * small  # ~4x the pixels (the cache allowance aside)
    full = frame_activation_bytes({**config, "attention_downsample": 1}, (512, 512))
    assert full > large + 4 * 512**3 * 4  # row and column logits of a 512^2 attention map, twice
    assert frame_activation_bytes(check_config(RamAvatar, get_config("paper-1024"), "x"), (1024, 1024)) < 6 * 2**30


def test_every_numeric_model_argument_has_a_range():
    from ram_avatar.models import BaselineUNet, PoseVAE, RamAvatar, SubjectPoseDecoder, TemporalDiscriminator
    from ram_avatar.models.hub import CONFIG_RANGES

    for cls in (RamAvatar, BaselineUNet, PoseVAE, SubjectPoseDecoder, TemporalDiscriminator):
        for name, parameter in inspect.signature(cls.__init__).parameters.items():
            default = parameter.default
            if isinstance(default, (int, float, list, tuple)) and not isinstance(default, bool):
                assert name in CONFIG_RANGES, f"{cls.__name__}({name}=...) has no range in CONFIG_RANGES"


def test_a_model_folder_is_checked_by_from_pretrained_itself(tmp_path):
    """Not only whole avatars: every model class checks its folder (training runs, priors)."""
    from ram_avatar.models import PoseVAE

    PoseVAE(latent_dim=4, hidden_dim=8).save_pretrained(tmp_path / "prior")
    weights = tmp_path / "prior" / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:-10])
    with pytest.raises(AvatarFormatError, match="^prior/model.safetensors is damaged .*truncated"):
        PoseVAE.from_pretrained(tmp_path / "prior")
    weights.write_bytes(good)
    edit_json(tmp_path / "prior" / "config.json", hidden_dim=16)
    with pytest.raises(AvatarFormatError, match="prior/model.safetensors does not match prior/config.json"):
        PoseVAE.from_pretrained(tmp_path / "prior")
    edit_json(tmp_path / "prior" / "config.json", hidden_dim=8)
    assert PoseVAE.from_pretrained(tmp_path / "prior").latent_dim == 4


CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from ram_avatar.pipelines import RamAvatarPipeline
results = []
for folder in sys.argv[1:]:
    try:
        RamAvatarPipeline.from_pretrained(folder, device="cpu")
        results.append(["loaded", ""])
    except Exception as error:  # report whatever it is: the parent checks the class
        results.append([type(error).__name__, str(error)])
print(json.dumps(results))
"""


def test_huge_configs_fail_fast_under_an_address_space_limit(tmp_path):
    """10^6 channels (the old code tried to allocate 262 GB), weights for a 16384^2 x 4096 texture,
    and full-size attention at 2048^2 (137 GB of logits at the first frame) each fail with a
    clear error in a process that may map 3 GiB at most (loading the example needs ~0.8 GiB)."""
    cases = {
        "widths": ({"widths": [10**6] * 4}, {}, "AvatarFormatError", "'widths' must be a list of 1 to 10 integers"),
        "texture": ({"texture_size": 16384, "texture_channels": 4096}, {}, "AvatarFormatError", "does not match"),
        "attention": ({"attention_downsample": 1}, {"image_size": [2048, 2048]}, "LimitError", "memory an avatar"),
    }
    folders = []
    for name, (config, manifest, _, _) in cases.items():
        folder = Path(shutil.copytree(EXAMPLE, tmp_path / name))
        edit_json(folder / "avatar" / "config.json", **config)
        edit_json(folder / "avatar.json", **manifest)
        folders.append(str(folder))
    folders.append(str(EXAMPLE))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", CHILD.format(limit=3 * 2**30), *folders],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    # the address-space limit is the bound: allocating what these configs ask for would fail
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for (error, message), (_, _, expected, text) in zip(results, cases.values()):
        assert error == expected and text in message, (error, message)
    assert results[-1] == ["loaded", ""]  # the example itself loads within the same bound
