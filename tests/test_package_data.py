"""The default pose prior ships inside the package: a wheel carries it, and a non-editable install
finds it (``default_prior``) and loads it, so ``ram-avatar create`` gives every install MDA."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRIOR_FILES = ("config.json", "model.safetensors", "README.md")

# Run by the installed copy, from a folder outside the checkout: where ram_avatar came from, what
# default_prior() found, and that the prior it names loads and encodes a pose.
CHECK = """
import json, sys
import torch
import ram_avatar
from ram_avatar.models.pose_vae import PoseVAE
from ram_avatar.pipelines.cli import default_prior

folder = default_prior()
prior = PoseVAE.from_pretrained(folder).eval()
with torch.no_grad():
    mean, _ = prior.encode(torch.zeros(1, prior.num_joints, 3))
print(json.dumps({"package": ram_avatar.__file__, "prior": folder, "latent": list(mean.shape)}))
"""


def test_the_shipped_prior_is_the_example_avatars():
    """The package's copy has the same bytes as the bundled example avatar's prior."""
    from ram_avatar.pipelines.cli import default_prior

    shipped, example = Path(default_prior()), ROOT / "examples" / "avatars" / "dancer-rt256" / "pose_prior"
    assert shipped == ROOT / "ram_avatar" / "mda" / "pose_prior"  # the package's, not the example's
    for name in PRIOR_FILES:
        assert (shipped / name).read_bytes() == (example / name).read_bytes(), name


def test_a_non_editable_install_carries_the_prior_and_finds_it(tmp_path):
    """Build a wheel of the package (no network, no build isolation), install it into a folder of
    its own and run it from outside the checkout: the prior is in the wheel, ``default_prior()``
    names the installed copy, and it loads. (Before, the prior lived only in ``examples/``, which
    no wheel carries, and ``default_prior()`` returned None outside a checkout.)"""
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "ram_avatar", source / "ram_avatar", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "--quiet"]
    build = ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"), str(source)]
    subprocess.run([*pip, *build], check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("ram_avatar-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"ram_avatar/mda/pose_prior/{name}" for name in PRIOR_FILES} <= names

    site = tmp_path / "site"
    install = ["install", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    subprocess.run([*pip, *install], check=True, cwd=tmp_path)
    # The installed copy comes first on the path; the project venv supplies torch and the rest.
    env = {**os.environ, "PYTHONPATH": str(site), "RAM_AVATAR_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(site), found  # the installed copy ran, not the checkout
    assert Path(found["prior"]) == site / "ram_avatar" / "mda" / "pose_prior"
    config = json.loads((site / "ram_avatar" / "mda" / "pose_prior" / "config.json").read_text())
    assert found["latent"] == [1, config["latent_dim"]]


@pytest.mark.parametrize("found", [True, False])
def test_create_says_in_one_line_when_it_builds_no_mda(found, tmp_path, monkeypatch, capsys):
    """Without a pose prior ``create`` prints one line saying the avatar gets no MDA; with one, nothing."""
    from ram_avatar.pipelines import cli

    monkeypatch.setattr(cli, "default_prior", lambda: "a prior" if found else None)
    seen = []

    def train_decoder(subject, prior, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(("decoder", prior))
        raise KeyboardInterrupt  # far enough

    def assemble(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(("assemble", kwargs["prior"]))
        raise KeyboardInterrupt

    monkeypatch.setattr("ram_avatar.mda.train_subject_decoder", train_decoder)
    monkeypatch.setattr("ram_avatar.pipelines.RamAvatarPipeline.from_training", assemble)
    work = tmp_path / "me.work"  # tracked and trained already: create skips both
    for name in ("subject/meta.json", "train/avatar/config.json"):
        (work / name).parent.mkdir(parents=True)
        (work / name).write_text("{}")
    with pytest.raises(KeyboardInterrupt):
        cli.create_avatar("clip.mp4", str(tmp_path / "me"), progress=False)
    said = [line for line in capsys.readouterr().err.splitlines() if "MDA" in line]
    if found:
        assert seen == [("decoder", "a prior")] and said == []
    else:
        assert seen == [("assemble", None)]
        assert len(said) == 1 and said[0].startswith("no pose prior found") and "--prior" in said[0]
