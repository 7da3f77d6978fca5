"""Model cards that are correct for what they describe: the avatar's name as title, snippets that
run as written (the bundled example's, executed here), real table headers, held-out metrics
labelled whole frame / person only, the synthetic-subject consent text, valid YAML metadata."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from pipeline_fixture import TINY

from ram_avatar.models import RamAvatar
from ram_avatar.pipelines import Framing, RamAvatarPipeline
from ram_avatar.training import TrainConfig
from ram_avatar.training.card import avatar_card, metrics_table, save_avatar

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "avatars" / "dancer-rt256"
REAL_PERSON = "reproduces a real person's appearance"


def python_snippets(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.S)


def check_structure(card: str, title: str) -> None:
    """Valid YAML metadata, the title, and no table with an empty header row."""
    assert ModelCard(card).data.library_name == "ram-avatar"
    assert re.search(r"^# (.*)$", card, flags=re.M).group(1) == title
    for header in re.findall(r"^(\|.*\|)\n\|[-| ]+\|$", card, flags=re.M):
        assert all(cell.strip() for cell in header.strip("|").split("|")), header


def tiny_subject(synthetic_name: str = "alice") -> SimpleNamespace:
    """What a card reads of a subject dataset."""
    return SimpleNamespace(
        source_video=f"{synthetic_name}.mp4", source_size=(96, 64), num_frames=16, image_size=(48, 48), fps=30.0,
        shape=[0.5] * 6, template=SimpleNamespace(name="anny", shape_space="anny-phenotype-6"),
    )  # fmt: skip


def tiny_metrics(held_out: dict) -> dict:
    return {"subject": "subjects/alice", "train_frames": 12, "held_out_frames": [3, 7, 11, 15], "steps": 4,
            "train_minutes": 0.1, "device": "cpu", "held_out": held_out}  # fmt: skip


def tiny_pipeline(card: str, synthetic: bool) -> RamAvatarPipeline:
    """A whole avatar around an untrained tiny network (no training, no body template)."""
    return RamAvatarPipeline(
        RamAvatar(**TINY), "anny", torch.full((6,), 0.5), Framing(60.0, (0.5, 0.5), 2.5), 30.0, (48, 48), name="alice",
        source={"video": "alice.mp4", "frames": 16, "synthetic": synthetic}, avatar_files={"README.md": card.encode()}, device="cpu",
    )  # fmt: skip


def test_metrics_table_pairs_whole_frame_and_person_only_values_of_any_metric():
    table = metrics_table({"psnr": 30.0, "ssim": 0.9, "psnr_masked": 20.0, "lpips_alex_masked": 0.1, "tlpips": None})
    lines = table.splitlines()
    assert lines[0] == "| metric | whole frame | person only (masked) |"
    assert "| PSNR (dB, higher is better) | 30 | 20 |" in lines
    assert "| SSIM (higher is better) | 0.9 | n/a |" in lines
    assert "| LPIPS, AlexNet (lower is better) | n/a | 0.1 |" in lines
    assert "| tlpips | n/a | n/a |" in lines  # a metric without a label is still shown


def test_training_card_snippet_runs_and_titles_the_avatar(tmp_path, anny_template):
    folder = save_avatar(RamAvatar(**TINY), tmp_path / "run" / "avatar", tiny_subject(), TrainConfig(),
                         tiny_metrics({"psnr": 30.0, "psnr_masked": 20.0}))  # fmt: skip
    card = (folder / "README.md").read_text()
    check_structure(card, "alice")
    assert REAL_PERSON in card and "| PSNR (dB, higher is better) | 30 | 20 |" in card
    (snippet,) = python_snippets(card)
    assert folder.as_posix() in snippet  # loads from where the card is
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102: our own generated card
    assert scope["rgb"].shape == (1, 3, 48, 48) and scope["alpha"].shape == (1, 1, 48, 48)
    assert scope["alpha"].amax() > 0  # the body is in the frame the snippet's camera makes


@pytest.mark.parametrize("synthetic", [False, True])
def test_whole_avatar_cards_say_where_the_avatar_is_and_whether_its_person_is_real(tmp_path, synthetic):
    network = str(avatar_card(RamAvatar(**TINY), tiny_subject(), TrainConfig(), tiny_metrics({"psnr": 30.0}), "runs/alice/avatar"))
    pipe = tiny_pipeline(network, synthetic)
    folder = pipe.save_pretrained(tmp_path / "alice")
    card, nested = (folder / "README.md").read_text(), (folder / "avatar" / "README.md").read_text()
    check_structure(card, "alice")
    check_structure(nested, "alice: the network")
    for text in (card, nested):
        assert (REAL_PERSON in text) != synthetic and ("*synthetic* person" in text) == synthetic
        assert "runs/alice/avatar" not in text  # the training run's location is replaced by the avatar's
        assert all(json.dumps(folder.as_posix()) in snippet for snippet in python_snippets(text))
    assert "| PSNR (dB, higher is better) | 30 | n/a |" in card  # the network card's facts are kept
    assert "hub-owner/alice" in pipe.model_card("hub-owner/alice")
    # Loading and saving again gives the same cards.
    again = RamAvatarPipeline.from_pretrained(folder, device="cpu").save_pretrained(tmp_path / "copy")
    assert (again / "README.md").read_text() == card.replace(folder.as_posix(), again.as_posix())
    assert (again / "avatar" / "README.md").read_text() == nested.replace(folder.as_posix(), again.as_posix())


@pytest.mark.parametrize("card", ["README.md", "avatar/README.md"])
def test_bundled_example_cards_run_as_written(card, tmp_path, monkeypatch):
    """Every Python snippet of the bundled example's cards, executed as it is, from the repository
    root (where the cards say the avatar is), with its outputs going to a temporary folder."""
    text = (EXAMPLE / card).read_text()
    check_structure(text, "dancer-rt256" if card == "README.md" else "dancer-rt256: the network")
    assert REAL_PERSON not in text and "*synthetic* person" in text
    assert "whole frame" in text and "person only" in text
    snippets = python_snippets(text)
    assert snippets and all('"examples/avatars/dancer-rt256"' in snippet for snippet in snippets)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    for snippet in snippets:
        scope: dict = {}
        exec(snippet, scope)  # noqa: S102: the repository's own card
    if card == "README.md":
        assert scope["result"].num_frames == 30 and (tmp_path / "wave.mp4").is_file()
    else:
        assert isinstance(scope["avatar"], RamAvatar)
