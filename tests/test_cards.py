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
from huggingface_hub import ModelCard, metadata_load
from pipeline_fixture import TINY

from ram_avatar.models import RamAvatar
from ram_avatar.pipelines import Framing, RamAvatarPipeline
from ram_avatar.training import TrainConfig
from ram_avatar.training.card import (
    CardError,
    augmentation,
    avatar_card,
    load_card,
    loss_mix,
    metrics_table,
    parse_card,
    save_avatar,
)

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
        source_video=f"{synthetic_name}.mp4",
        source_size=(96, 64),
        num_frames=16,
        image_size=(48, 48),
        fps=30.0,
        shape=[0.5] * 6,
        template=SimpleNamespace(name="anny", shape_space="anny-phenotype-6"),
    )


def tiny_metrics(held_out: dict) -> dict:
    return {
        "subject": "subjects/alice",
        "train_frames": 12,
        "held_out_frames": [3, 7, 11, 15],
        "steps": 4,
        "train_minutes": 0.1,
        "device": "cpu",
        "held_out": held_out,
    }


def tiny_pipeline(card: str, synthetic: bool) -> RamAvatarPipeline:
    """A whole avatar around an untrained tiny network (no training, no body template)."""
    return RamAvatarPipeline(
        RamAvatar(**TINY),
        "anny",
        torch.full((6,), 0.5),
        Framing(60.0, (0.5, 0.5), 2.5),
        30.0,
        (48, 48),
        name="alice",
        source={"video": "alice.mp4", "frames": 16, "synthetic": synthetic},
        avatar_files={"README.md": card.encode()},
        device="cpu",
    )


def test_metrics_table_pairs_whole_frame_and_person_only_values_of_any_metric():
    table = metrics_table({"psnr": 30.0, "ssim": 0.9, "psnr_masked": 20.0, "lpips_alex_masked": 0.1, "tlpips": None})
    lines = table.splitlines()
    assert lines[0] == "| metric | whole frame | person only (masked) |"
    assert "| PSNR (dB, higher is better) | 30 | 20 |" in lines
    assert "| SSIM (higher is better) | 0.9 | n/a |" in lines
    assert "| LPIPS, AlexNet (lower is better) | n/a | 0.1 |" in lines
    assert "| tlpips | n/a | n/a |" in lines  # a metric without a label is still shown


def test_training_card_snippet_runs_and_titles_the_avatar(tmp_path, anny_template):
    folder = save_avatar(
        RamAvatar(**TINY),
        tmp_path / "run" / "avatar",
        tiny_subject(),
        TrainConfig(),
        tiny_metrics({"psnr": 30.0, "psnr_masked": 20.0}),
    )
    card = (folder / "README.md").read_text()
    check_structure(card, "alice")
    assert REAL_PERSON in card and "| PSNR (dB, higher is better) | 30 | 20 |" in card
    assert "| losses | L1 1, alpha 10 (" in card  # only the terms the run trained with
    (snippet,) = python_snippets(card)
    assert folder.as_posix() in snippet  # loads from where the card is
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 (our own generated card)
    assert scope["rgb"].shape == (1, 3, 48, 48) and scope["alpha"].shape == (1, 1, 48, 48)
    assert scope["alpha"].amax() > 0  # the body is in the frame the snippet's camera makes


def test_cards_list_the_losses_and_augmentation_a_run_trained_with():
    paper = loss_mix(TrainConfig.for_config("paper-1024"))
    assert paper == "L1 1, alpha 1, VGG16 perceptual 1, hand perceptual 1, temporal GAN (non-saturating) 0.01"
    assert loss_mix(TrainConfig(gan=0.05)) == "L1 1, alpha 10, temporal GAN (non-saturating) 0.05"
    assert loss_mix(TrainConfig(alpha=20, alpha_loss="mse")) == "L1 1, alpha (MSE) 20"
    assert augmentation(TrainConfig()) == "random background colours"
    assert augmentation(TrainConfig(random_background=False, camera_zoom=0.15, camera_shift=0.1)) == (
        "camera jitter (zoom up to 1.15x either way, shift up to 10% of the frame)"
    )


@pytest.mark.parametrize("synthetic", [False, True])
def test_whole_avatar_cards_say_where_the_avatar_is_and_whether_its_person_is_real(tmp_path, synthetic):
    metrics = tiny_metrics({"psnr": 30.0})
    network = str(avatar_card(RamAvatar(**TINY), TINY, tiny_subject(), TrainConfig(), metrics, "runs/alice/avatar"))
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
        exec(snippet, scope)  # noqa: S102 (the repository's own card)
    if card == "README.md":
        assert scope["result"].num_frames == 30 and (tmp_path / "wave.mp4").is_file()
    else:
        assert isinstance(scope["avatar"], RamAvatar)


def held_out_of(card: ModelCard) -> dict[str, float]:
    """A card's evaluation results as metrics.json's ``held_out`` (each result's config is its key)."""
    return {result.metric_config: result.metric_value for result in card.data.eval_results}


def test_card_metadata_round_trips_through_model_card_load(tmp_path):
    """Library, tags, licence and the held-out metrics (as model-index evaluation results on the
    subject's clip) read back by ModelCard.load and metadata_load with metrics.json's values."""
    held_out = {"psnr": 30.125, "ssim": 0.875, "lpips_alex": 0.0625, "psnr_masked": 20.5, "lpips_alex_masked": None}
    folder = save_avatar(RamAvatar(**TINY), tmp_path / "avatar", tiny_subject(), TrainConfig(), tiny_metrics(held_out))
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "ram-avatar" and card.data.license == "other"
    assert {"ram-avatar", "avatar", "human-avatar", "neural-rendering"} <= set(card.data.tags)
    metrics = json.loads((folder / "metrics.json").read_text())["held_out"]
    assert held_out_of(card) == {k: v for k, v in metrics.items() if v is not None}  # not measured: not reported
    by_key = {result.metric_config: result for result in card.data.eval_results}
    types = [by_key[key].metric_type for key in ("psnr", "ssim", "lpips_alex", "psnr_masked")]
    assert types == ["psnr", "ssim", "lpips", "psnr"]
    assert by_key["psnr_masked"].metric_name == "PSNR, person only (dB, higher is better)"
    tasks = {(r.task_type, r.dataset_name, r.dataset_split) for r in card.data.eval_results}
    assert tasks == {("image-to-image", "alice.mp4", "held-out")}  # the subject's clip, its held-out frames
    assert card.data.model_name == "alice"
    assert metadata_load(folder / "README.md")["model-index"][0]["results"][0]["dataset"]["name"] == "alice.mp4"


def test_whole_avatar_card_reports_metrics_json_and_keeps_the_network_cards_licence(tmp_path):
    """A folder whose network card has no evaluation results (saved before cards had them) gets
    them from its metrics.json; a licence set in the network card stays in both cards."""
    old_card = "---\nlibrary_name: ram-avatar\nlicense: cc-by-4.0\n---\n\n# alice\n\n## Training data\n\nfacts\n"
    metrics = tiny_metrics({"psnr": 31.5, "ssim_masked": 0.5})
    pipe = tiny_pipeline(old_card, synthetic=True)
    pipe.avatar_files["metrics.json"] = json.dumps(metrics).encode()
    folder = pipe.save_pretrained(tmp_path / "alice")
    for path in (folder / "README.md", folder / "avatar" / "README.md"):
        card = ModelCard.load(path)
        assert card.data.license == "cc-by-4.0" and held_out_of(card) == {"psnr": 31.5, "ssim_masked": 0.5}
        assert card.data.eval_results[0].dataset_name == "alice.mp4" and "facts" in card.text


def test_bundled_example_card_metadata_is_its_metrics():
    metrics = json.loads((EXAMPLE / "avatar" / "metrics.json").read_text())["held_out"]
    for card in ("README.md", "avatar/README.md"):
        data = ModelCard.load(EXAMPLE / card).data
        assert data.library_name == "ram-avatar" and data.license and "ram-avatar" in data.tags
        assert held_out_of(ModelCard.load(EXAMPLE / card)) == metrics
        assert data.eval_results[0].dataset_name == "tfjs_synthetic_dance_static_576.mp4"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The closing --- is missing: the YAML would run into the card's text.
        ("---\nlibrary_name: ram-avatar\n\n# alice\n\nSome text.\n", "has no closing `---` line"),
        # ... and a horizontal rule further down would close it: the YAML then holds Markdown.
        (
            "---\nlibrary_name: ram-avatar\n\n# alice\n\nSome text.\n\n---\n\nMore.\n",
            r"is not valid: could not find expected ':' \(line 7 of the file\)",
        ),
        ("---\n- a list\n---\n\n# alice\n", "is not valid: repo card metadata block should be a dict"),
        ("---\nmodel-index: 3\n---\n\n# alice\n", "is not valid: Invalid `model_index`"),
    ],
)
def test_a_broken_front_matter_gets_a_clear_message(tmp_path, text, message):
    path = tmp_path / "folder" / "README.md"
    path.parent.mkdir()
    path.write_text(text)
    for read in (lambda: load_card(path), lambda: parse_card(text)):
        with pytest.raises(CardError, match=message) as raised:
            read()
        assert str(raised.value).startswith("README.md") and str(tmp_path) not in str(raised.value)
    with pytest.raises(CardError, match="avatar/README.md"):  # a whole avatar saved around such a network card
        tiny_pipeline(text, synthetic=False).save_pretrained(tmp_path / "alice")
    assert not (tmp_path / "alice").exists()


def test_cards_without_front_matter_are_read():
    card = parse_card("# alice\n\nNo metadata.\n")
    assert card.data.to_dict() == {} and card.text.startswith("# alice")
