"""Saving a trained avatar with its model card, and pushing it to the Hugging Face Hub.

The card is ``model_cards/avatar.md`` (a Jinja template) rendered by ``huggingface_hub.ModelCard``
with the model class's own card metadata (library, tags) and the run's facts: subject data, body
template, config, training steps, held-out metrics, intended use, consent and deep-fake warning.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ram_avatar.atomic import staged_folder

CARD_TEMPLATE = Path(__file__).resolve().parents[2] / "model_cards" / "avatar.md"
UPLOAD_PATTERNS = ["*.safetensors", "*.json", "README.md"]  # weights, config, card: never pickles


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def avatar_card(model: torch.nn.Module, subject, config, metrics: dict[str, Any], repo_id: str | None = None):  # noqa: ANN001, ANN201
    """The ``huggingface_hub.ModelCard`` of a trained avatar (see ``model_cards/avatar.md``)."""
    from huggingface_hub import ModelCard, ModelCardData

    if not CARD_TEMPLATE.is_file():
        raise FileNotFoundError(f"the model card template {CARD_TEMPLATE} is missing: reinstall ram-avatar from its repository")
    data = ModelCardData(**model._hub_mixin_info.model_card_data.to_dict())  # the class's library and tags
    data.license = data.license or "other"
    name = Path(str(metrics["subject"])).name
    held_out = metrics["held_out"] or {}
    return ModelCard.from_template(
        card_data=data,
        template_path=str(CARD_TEMPLATE),
        title=f"ram-avatar: {name} ({config.config}{', baseline U-Net' if config.baseline else ''})",
        model_class=type(model).__name__,
        repo_id=repo_id or "your-name/your-avatar",
        subject_name=name,
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
        config_name=config.config,
        steps=metrics["steps"],
        batch_size=config.batch_size,
        train_minutes=f"{metrics['train_minutes']:.1f}",
        device=metrics["device"],
        w_l1=config.l1, w_alpha=config.alpha, w_perceptual=config.perceptual,
        w_hand=config.hand_perceptual, w_gan=config.gan,
        lr=config.lr, grad_clip=config.grad_clip, ema_decay=config.ema_decay,
        model_config=json.dumps(model._hub_mixin_config, indent=2),
        background=config.background,
        metrics=[(key, _number(value)) for key, value in held_out.items()],
    )  # fmt: skip


def save_avatar(
    model: torch.nn.Module, folder: str | os.PathLike, subject, config, metrics: dict[str, Any], repo_id: str | None = None  # noqa: ANN001
) -> Path:
    """``model.save_pretrained(folder)`` (config.json + model.safetensors) plus README.md (the card)
    and metrics.json, written in a staging folder and renamed into place."""
    folder = Path(folder)
    with staged_folder(folder) as staging:
        # The card first: save_pretrained keeps an existing README.md instead of its generic one.
        avatar_card(model, subject, config, metrics, repo_id).save(staging / "README.md")
        model.save_pretrained(staging)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
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
