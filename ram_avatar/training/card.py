"""Saving a trained avatar with its model card, and pushing it to the Hugging Face Hub.

The card is ``model_cards/avatar.md`` (a Jinja template) rendered by ``huggingface_hub.ModelCard``
with the model class's own card metadata (library, tags) and the run's facts: subject data, body
template, config, training steps, held-out metrics (whole frame and person only), intended use,
consent and deep-fake warning (a variant for synthetic subjects), and a usage snippet that runs
as written. A whole avatar folder's cards are rebuilt from it (:func:`rebuild_card`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ram_avatar.atomic import staged_folder

CARD_TEMPLATE = Path(__file__).resolve().parents[2] / "model_cards" / "avatar.md"
UPLOAD_PATTERNS = ["*.safetensors", "*.json", "README.md", "preview.png"]  # weights, config, card, picture: never pickles


INTRO = """A **ram-avatar** network (RAM-Avatar, CVPR 2024): a real-time, full-body controllable avatar
trained from one monocular video with the `ram-avatar` package. It renders the person of that video
in any body, hand and face pose given as SMPL-X-layout parameters."""
CONSENT = {
    False: """This model reproduces a real person's appearance. It may only be shared with that person's
informed consent and used for what they agreed to, and must never be used to impersonate, deceive,
harass or defame anyone, or to make sexual or otherwise degrading content. Label what it renders as
synthetic. If you are the person shown and did not consent, ask the repository owner (or Hugging
Face) to take it down.""",
    True: """This avatar was made from a video of a *synthetic* person (rendered by a computer, not filmed):
it reproduces no real person's appearance. Still label what it renders as synthetic, and never use
it to deceive. The same tools make avatars of real people: build and share those only with the
person's informed consent.""",
}
METRIC_NAMES = {"psnr": "PSNR (dB, higher is better)", "ssim": "SSIM (higher is better)",
                "lpips_alex": "LPIPS, AlexNet (lower is better)", "lpips_vgg": "LPIPS, VGG (lower is better)"}  # fmt: skip
MASKED = "_masked"  # the suffix of a metric computed over the person's pixels only
CONSENT_HEADING, USE_HEADING = "Consent and deep-fake warning", "Use"  # sections a whole avatar's cards replace


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def metrics_table(held_out: dict[str, Any]) -> str:
    """Markdown table of held-out metrics, one row per metric with its whole-frame value and its
    person-only value (the key with ``_masked``), whichever keys there are ("n/a" where one is missing)."""
    rows: dict[str, dict[bool, Any]] = {}
    for key, value in held_out.items():
        masked = key.endswith(MASKED)
        rows.setdefault(key.removesuffix(MASKED), {})[masked] = value
    lines = ["| metric | whole frame | person only (masked) |", "|---|---|---|"]
    lines += [f"| {METRIC_NAMES.get(name, name)} | {_number(v.get(False))} | {_number(v.get(True))} |" for name, v in rows.items()]
    return "\n".join(lines)


def network_usage(model_id: str, model_class: str, template: str, shape: list[float], image_size: tuple[int, int]) -> str:
    """The card's "Use" section for a network on its own: one frame rendered, runnable as written
    where ``model_id`` (a folder or Hub id) holds the network."""
    values = ", ".join(f"{v:.4f}" for v in shape)
    return f"""```python
import torch

from ram_avatar.body import SmplxPose, load_template
from ram_avatar.models import {model_class}
from ram_avatar.render import Camera

avatar = {model_class}.from_pretrained({json.dumps(model_id)})   # model.safetensors only (no pickles)
template = load_template("{template}")
shape = torch.tensor([[{values}]])   # the subject's body shape, as tracked
pose = SmplxPose.zeros(1)   # one frame in the SMPL-X layout (here the T-pose): set its joints to drive it
camera = Camera.framing(template(pose, shape).vertices, image_size={tuple(image_size)})   # a front camera that fits the body
with torch.no_grad():
    out = avatar(avatar.prepare_inputs(template, pose, camera, shape=shape))
rgb, alpha = out["rgb"], out["alpha"]   # (1, 3 | 1, H, W) in [0, 1]
```"""


def _split_card(card: str) -> tuple[str, dict[str, str]]:
    """A card's YAML header (with its ``---`` lines, or "") and its ``## `` sections (heading ->
    the text under it), in order; what comes before the first section (title, intro) is left out."""
    header, body = "", card
    if card.startswith("---"):
        end = card.find("\n---", 3)
        header, body = card[: end + 4] + "\n", card[end + 4 :]
    _, *sections = body.split("\n## ")
    return header, dict(section.split("\n", 1) if "\n" in section else (section, "") for section in sections)


def rebuild_card(card: str, title: str, intro: str, first: dict[str, str]) -> str:
    """``card`` with a new title and intro, the sections ``first`` (heading -> text) first, then
    its other sections as they are (``first`` replaces those of the same heading)."""
    header, sections = _split_card(card)
    header = header or "---\nlibrary_name: ram-avatar\nlicense: other\ntags:\n- avatar\n- full-body\n- ram-avatar\n---\n"
    sections = {**{k: f"\n{v.strip()}\n" for k, v in first.items()}, **{k: v for k, v in sections.items() if k not in first}}
    body = "".join(f"\n## {heading}\n{text.rstrip()}\n" for heading, text in sections.items())
    return f"{header}\n# {title}\n\n{intro.strip()}\n{body}"


def avatar_card(  # noqa: ANN201
    model: torch.nn.Module, subject, config, metrics: dict[str, Any], model_id: str,  # noqa: ANN001
    *, name: str | None = None, synthetic: bool = False,
):
    """The ``huggingface_hub.ModelCard`` of a trained avatar network (see ``model_cards/avatar.md``).

    ``model_id``: where the card lives, a folder or Hub id (its usage loads the network from
    there); ``name``: the title (default: the subject dataset's name); ``synthetic``: the subject
    is a rendered, synthetic person (the consent text says so).
    """
    from huggingface_hub import ModelCard, ModelCardData

    if not CARD_TEMPLATE.is_file():
        raise FileNotFoundError(f"the model card template {CARD_TEMPLATE} is missing: reinstall ram-avatar from its repository")
    data = ModelCardData(**model._hub_mixin_info.model_card_data.to_dict())  # the class's library and tags
    data.license = data.license or "other"
    subject_name = Path(str(metrics["subject"])).name
    return ModelCard.from_template(
        card_data=data,
        template_path=str(CARD_TEMPLATE),
        title=name or subject_name,
        intro=INTRO,
        consent=CONSENT[synthetic],
        usage=network_usage(model_id, type(model).__name__, subject.template.name, [float(v) for v in subject.shape], subject.image_size),
        model_class=type(model).__name__,
        subject_name=subject_name,
        source_video=subject.source_video,
        source_size="x".join(str(s) for s in reversed(subject.source_size)),
        num_frames=subject.num_frames,
        image_size="x".join(str(s) for s in reversed(subject.image_size)),
        fps=f"{subject.fps:g}",
        train_frames=metrics["train_frames"],
        held_out_count=len(metrics["held_out_frames"]),
        held_out_every=config.held_out_every,
        template=subject.template.name,
        shape_space=subject.template.shape_space,
        config_name=f"{config.config}{', baseline U-Net' if config.baseline else ''}",
        steps=metrics["steps"],
        batch_size=config.batch_size,
        train_minutes=f"{metrics['train_minutes']:.1f}",
        device=metrics["device"],
        w_l1=config.l1, w_alpha=config.alpha, w_perceptual=config.perceptual,
        w_hand=config.hand_perceptual, w_gan=config.gan,
        lr=config.lr, grad_clip=config.grad_clip, ema_decay=config.ema_decay,
        model_config=json.dumps(model._hub_mixin_config, indent=2),
        background=config.background,
        metrics_table=metrics_table(metrics["held_out"] or {}),
    )  # fmt: skip


def save_avatar(
    model: torch.nn.Module, folder: str | os.PathLike, subject, config, metrics: dict[str, Any], repo_id: str | None = None,  # noqa: ANN001
    preview: np.ndarray | None = None,
) -> Path:
    """``model.save_pretrained(folder)`` (config.json + model.safetensors) plus README.md (the card,
    whose usage names ``repo_id`` when it will be pushed there, else ``folder``) and metrics.json,
    written in a staging folder and renamed into place; ``preview`` (H, W, 3) uint8, when given,
    goes in as preview.png (held-out frames: ground truth | avatar, on white)."""
    folder = Path(folder)
    with staged_folder(folder) as staging:
        # The card first: save_pretrained keeps an existing README.md instead of its generic one.
        avatar_card(model, subject, config, metrics, repo_id or folder.as_posix()).save(staging / "README.md")
        model.save_pretrained(staging)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        if preview is not None:
            import imageio.v3 as iio

            iio.imwrite(staging / "preview.png", preview, plugin="pillow")
    return folder


def push_avatar(folder: str | os.PathLike, repo_id: str, *, private: bool | None = None, token: str | None = None):  # noqa: ANN201
    """Upload a saved avatar folder (weights, config, card, metrics) to the Hub model repo ``repo_id``.

    Only ``*.safetensors``, ``*.json`` and ``README.md`` are uploaded. Returns the commit info.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved avatar (model.safetensors + config.json): train one first")
    api = HfApi(token=token)
    repo = api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(
        repo_id=repo.repo_id, folder_path=str(folder), repo_type="model",
        allow_patterns=UPLOAD_PATTERNS, commit_message="Upload ram-avatar avatar",
    )  # fmt: skip
